"""FastCarRacing must be frame-for-frame identical to gymnasium's CarRacing-v3.

Every test steps a reference ``CarRacing`` and a ``FastCarRacing`` side by side
with the same seed and actions and compares every observation (``np.array_equal``),
reward (exact, including its type), ``terminated``, ``truncated`` and ``info``.
Actions never depend on the fast environment: scripted policies read the
reference environment's state only.
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pygame
import pytest
from gymnasium.envs.box2d.car_racing import CarRacing
from gymnasium.wrappers import TimeLimit
from pygame import gfxdraw

import worldmodels  # noqa: F401  (registers FastCarRacing-v3)
from worldmodels.envs import fast_carracing
from worldmodels.envs.fast_carracing import FastCarRacing

if "FastCarRacing-v3" not in gymnasium.registry:  # pragma: no cover - registered by worldmodels
    gymnasium.register(
        id="FastCarRacing-v3",
        entry_point="worldmodels.envs.fast_carracing:FastCarRacing",
        max_episode_steps=1000,
        reward_threshold=900,
    )


# ------------------------------------------------------------------ helpers
def make_pair(max_episode_steps: int = 1000, **kwargs):
    ref = TimeLimit(CarRacing(**kwargs), max_episode_steps)
    fast = TimeLimit(FastCarRacing(**kwargs), max_episode_steps)
    return ref, fast


def assert_same_step(t, ref_out, fast_out):
    (o_r, r_r, te_r, tr_r, i_r), (o_f, r_f, te_f, tr_f, i_f) = ref_out, fast_out
    assert o_f.shape == o_r.shape and o_f.dtype == o_r.dtype, f"step {t}: obs shape/dtype"
    if not np.array_equal(o_r, o_f):
        n = int((o_r != o_f).any(axis=-1).sum())
        pytest.fail(f"step {t}: observations differ in {n} pixels")
    assert type(r_f) is type(r_r) and r_f == r_r, f"step {t}: reward {r_f!r} != {r_r!r}"
    assert (te_f, tr_f) == (te_r, tr_r), f"step {t}: terminated/truncated"
    assert i_f == i_r, f"step {t}: info {i_f} != {i_r}"


def reset_pair(ref, fast, seed=None, options=None):
    o_r, i_r = ref.reset(seed=seed, options=options)
    o_f, i_f = fast.reset(seed=seed, options=options)
    assert np.array_equal(o_r, o_f), "reset observation differs"
    assert i_r == i_f


def run_pair(ref, fast, policy, n_steps, render=False):
    """Step both envs with ``policy(t, ref_env)``; return (steps, last ref output)."""
    out = None
    for t in range(n_steps):
        action = policy(t, ref.unwrapped)
        out = ref.step(action)
        assert_same_step(t, out, fast.step(action))
        if render:
            frame_r, frame_f = ref.render(), fast.render()
            assert frame_r.shape == frame_f.shape == (400, 600, 3)
            assert np.array_equal(frame_r, frame_f), f"step {t}: rgb_array render differs"
        if out[2] or out[3]:
            return t + 1, out
    return n_steps, out


def random_policy(seed):
    rng = np.random.default_rng(seed)

    def policy(t, env):
        return np.array([rng.uniform(-1, 1), rng.uniform(0, 1), rng.uniform(0, 0.3)], dtype=np.float32)

    return policy


def follow_track(t, env, lookahead=5, target_speed=35.0):
    """Steer towards a track point a few tiles ahead, at moderate speed."""
    car = env.car
    x, y = car.hull.position
    points = np.array([(p[2], p[3]) for p in env.track])
    i = int(np.argmin(((points - (x, y)) ** 2).sum(axis=1)))
    tx, ty = points[(i + lookahead) % len(points)]
    angle = car.hull.angle
    fx, fy = -math.sin(angle), math.cos(angle)
    dx, dy = tx - x, ty - y
    cross = (fx * dy - fy * dx) / (math.hypot(dx, dy) + 1e-9)
    v = car.hull.linearVelocity
    speed = math.hypot(v[0], v[1])
    gas = 0.2 if speed < target_speed else 0.0
    brake = 0.3 if speed > target_speed + 15 else 0.0
    return np.array([np.clip(-3.0 * cross, -1, 1), gas, brake], dtype=np.float32)


def straight_half_gas(t, env):
    return np.array([0.0, 0.5, 0.0], dtype=np.float32)


def skid_policy(t, env):
    """Accelerate, then alternate hard turns and braking: skid marks on road and grass."""
    if t < 40:
        return np.array([0.0, 0.6, 0.0], dtype=np.float32)
    phase = (t // 15) % 4
    steer = (-1.0, 1.0, 0.3, -0.3)[phase]
    return np.array([steer, 0.8 if phase < 2 else 0.0, 0.0 if phase < 2 else 0.95], dtype=np.float32)


# -------------------------------------------------------- episode comparisons
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zoom_in_and_random_actions(seed):
    """The first second (camera zoom-in, exact field polygon path) and beyond."""
    ref, fast = make_pair()
    reset_pair(ref, fast, seed=seed)
    steps, _ = run_pair(ref, fast, random_policy(seed), 120)
    assert steps == 120


@pytest.mark.parametrize("seed", [3, 4])
def test_driving_on_the_road(seed):
    ref, fast = make_pair()
    reset_pair(ref, fast, seed=seed)
    run_pair(ref, fast, follow_track, 300)
    env = ref.unwrapped
    assert env.tile_visited_count > 50  # really drove along the road (tile colours change)
    assert all(w.tiles for w in env.car.wheels)


@pytest.mark.parametrize("seed", [5, 6])
def test_off_road_then_leaving_the_playfield(seed):
    """Straight ahead: the road bends away, the car crosses grass and leaves the field."""
    ref, fast = make_pair()
    reset_pair(ref, fast, seed=seed)
    on_grass = []

    def policy(t, env):
        if not any(w.tiles for w in env.car.wheels):
            on_grass.append(t)
        return straight_half_gas(t, env)

    steps, (_, reward, terminated, truncated, info) = run_pair(ref, fast, policy, 400)
    assert terminated and not truncated
    assert reward == -100 and info == {"lap_finished": False}
    assert len(on_grass) > 30 and steps > 100


def test_truncation_and_next_episode():
    ref, fast = make_pair(max_episode_steps=60)
    reset_pair(ref, fast, seed=7)
    steps, (_, _, terminated, truncated, _) = run_pair(ref, fast, random_policy(7), 100)
    assert steps == 60 and truncated and not terminated
    # the next episode (new track, no seed) in the same env objects
    reset_pair(ref, fast)
    steps, (_, _, _, truncated, _) = run_pair(ref, fast, follow_track, 100)
    assert steps == 60 and truncated


def test_lap_finished_termination():
    """lap_complete_percent=0: the start tile completes the 'lap' at once."""
    ref, fast = make_pair(lap_complete_percent=0.0)
    reset_pair(ref, fast, seed=8)
    steps, (_, _, terminated, _, info) = run_pair(ref, fast, follow_track, 10)
    assert steps == 1 and terminated and info == {"lap_finished": True}


@pytest.mark.parametrize("seed", [9, 10])
def test_discrete_actions(seed):
    ref, fast = make_pair(continuous=False)
    reset_pair(ref, fast, seed=seed)
    rng = np.random.default_rng(seed)
    # mostly gas, so the car moves; all five actions occur
    actions = rng.choice(5, size=150, p=[0.15, 0.15, 0.15, 0.45, 0.1])
    run_pair(ref, fast, lambda t, env: int(actions[t]), 150)


@pytest.mark.parametrize("seed", [11, 12])
def test_domain_randomize(seed):
    ref, fast = make_pair(domain_randomize=True)
    reset_pair(ref, fast, seed=seed)
    run_pair(ref, fast, follow_track, 100)
    reset_pair(ref, fast, options={"randomize": False})  # keep the colours
    run_pair(ref, fast, straight_half_gas, 100)
    reset_pair(ref, fast, options={"randomize": True})  # new colours
    run_pair(ref, fast, random_policy(seed), 60)


def test_rgb_array_render():
    ref, fast = make_pair(render_mode="rgb_array")
    assert ref.unwrapped.render() is None and fast.unwrapped.render() is None  # before reset
    reset_pair(ref, fast, seed=13)
    assert np.array_equal(ref.render(), fast.render())
    run_pair(ref, fast, skid_policy, 130, render=True)
    assert len(ref.unwrapped.car.particles) > 0  # skid marks were drawn


def test_indicator_taller_than_the_bar():
    """A wheel spinning fast draws its ABS bar above the indicator strip."""
    ref, fast = make_pair()
    reset_pair(ref, fast, seed=14)
    run_pair(ref, fast, straight_half_gas, 60)
    for env in (ref.unwrapped, fast.unwrapped):
        env.car.wheels[0].omega = 1000.0  # a bar 0.01 * omega * h tall: above 5h
    run_pair(ref, fast, straight_half_gas, 5)


def test_gymnasium_make():
    ref = gymnasium.make("CarRacing-v3")
    fast = gymnasium.make("FastCarRacing-v3")
    assert fast.spec.max_episode_steps == 1000 and fast.spec.reward_threshold == 900
    assert isinstance(fast.unwrapped, FastCarRacing)
    reset_pair(ref, fast, seed=15)
    run_pair(ref, fast, random_policy(15), 60)


# ------------------------------------------------- the renderer's assumptions
def test_rotation_matches_vector2_bit_for_bit():
    rng = np.random.default_rng(0)
    half_pi = math.pi / 2
    angles = list(rng.normal(scale=10, size=200))
    angles += [k * half_pi + d for k in range(-8, 9) for d in (0.0, 1e-7, -1e-7, 1e-5)]
    points = rng.normal(scale=300, size=(16, 2))
    for angle in angles:
        rot = fast_carracing._rotation(float(angle))
        xs, ys = fast_carracing._transform(rot, points[:, 0], points[:, 1], 16.2, 500.5, 200.25)
        for (x, y), ex, ey in zip(points, xs, ys, strict=True):
            v = pygame.math.Vector2((float(x), float(y))).rotate_rad(float(angle))
            assert (v[0] * 16.2 + 500.5, v[1] * 16.2 + 200.25) == (ex, ey)


def test_box2d_transform_matches_float32_numpy():
    """``b2Transform * b2Vec2`` is float32 (c*x - s*y) + px, as _draw_car assumes."""
    rng = np.random.default_rng(3)
    env = CarRacing()
    env.reset(seed=0)
    body = env.car.hull
    for _ in range(200):
        body.position = tuple(rng.normal(scale=300, size=2).tolist())
        body.angle = float(rng.normal(scale=20))
        trans = body.transform
        c, s = np.float32(trans.q.c), np.float32(trans.q.s)
        px, py = np.float32(trans.position[0]), np.float32(trans.position[1])
        for x, y in rng.normal(size=(8, 2)).tolist():
            expected = trans * (x, y)
            vx, vy = np.float32(x), np.float32(y)
            assert (float((c * vx - s * vy) + px), float((s * vx + c * vy) + py)) == tuple(expected)


def test_indicator_bar_covers_the_hud_rows():
    surf = pygame.Surface((fast_carracing.WINDOW_W, fast_carracing.WINDOW_H))
    surf.fill((10, 20, 30))
    fast_carracing.FastCarRacing._draw_hud(surf, [], pygame.Surface((1, 1)), pygame.Rect(0, 799, 1, 1))
    rows = pygame.surfarray.array3d(surf).transpose(1, 0, 2).any(axis=(1, 2))
    hud = fast_carracing._HUD_ROWS
    assert not rows[-hud:].any() and rows[:-hud].all()


def test_background_fill_equals_field_polygon():
    """Where the field covers the window (by the margin), fill == gfxdraw polygon."""
    rng = np.random.default_rng(1)
    b = fast_carracing.PLAYFIELD
    color = np.array([102, 204, 102])
    env = FastCarRacing()
    checked = 0
    for _ in range(300):
        angle = float(rng.uniform(-7, 7))
        zoom = float(rng.choice([2.7 * 6.0, rng.uniform(1.2, 16.2)]))
        # field centre placed so that the window is often close to an edge
        r, phi = rng.uniform(0.6, 1.4) * b * zoom, rng.uniform(0, 2 * math.pi)
        tx, ty = 500 + r * math.cos(phi), 400 + r * math.sin(phi)
        rot = fast_carracing._rotation(angle)
        field = [
            fast_carracing._transform(rot, x, y, zoom, tx, ty)
            for x, y in ((b, b), (b, -b), (-b, -b), (-b, b))
        ]
        if not fast_carracing._covers_window(field):
            continue
        checked += 1
        exact = pygame.Surface((1000, 800))
        gfxdraw.aapolygon(exact, field, color)
        gfxdraw.filled_polygon(exact, field, color)
        filled = pygame.Surface((1000, 800))
        filled.fill(env._fill_color(color))
        assert np.array_equal(pygame.surfarray.pixels2d(exact), pygame.surfarray.pixels2d(filled))
    assert checked > 20


def test_invisible_polygons_draw_nothing():
    """gfxdraw output stays within 1 px of the truncated bounding box."""
    rng = np.random.default_rng(2)
    surf = pygame.Surface((1000, 800))
    margin = fast_carracing._OFFSCREEN_MARGIN
    for _ in range(400):
        size = rng.choice([382.0, 216.0, 57.0, 10.0])
        angle = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(angle), math.sin(angle)
        quad = np.array(
            [[0, 0], [size, 0], [size, size * rng.uniform(0.2, 1)], [0, size * rng.uniform(0.2, 1)]]
        )
        quad = quad @ np.array([[c, s], [-s, c]])
        lo, hi = quad.min(axis=0), quad.max(axis=0)
        gap = margin + rng.uniform(0, 1)  # bounding box just beyond the margin
        side = rng.integers(4)
        if side == 0:
            offset = (-gap - hi[0], rng.uniform(-300, 1100))
        elif side == 1:
            offset = (1000 + gap - lo[0], rng.uniform(-300, 1100))
        elif side == 2:
            offset = (rng.uniform(-300, 1300), -gap - hi[1])
        else:
            offset = (rng.uniform(-300, 1300), 800 + gap - lo[1])
        points = (quad + offset).tolist()
        gfxdraw.aapolygon(surf, points, (255, 255, 255))
        gfxdraw.filled_polygon(surf, points, (255, 255, 255))
    assert not pygame.surfarray.pixels2d(surf).any()


def test_human_render_mode_falls_back(monkeypatch):
    """Human rendering is the parent's; observations still match (headless)."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    ref, fast = make_pair(render_mode="human")
    try:
        reset_pair(ref, fast, seed=16)
        for t in range(10):
            action = np.array([0.2, 0.5, 0.0], dtype=np.float32)
            assert_same_step(t, ref.step(action), fast.step(action))
    finally:
        ref.close()
        fast.close()
