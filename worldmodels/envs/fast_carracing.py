"""A faster, pixel-identical drop-in replacement for gymnasium's ``CarRacing``.

:class:`FastCarRacing` produces exactly the same observations, rewards,
``terminated``/``truncated`` flags and infos as
``gymnasium.envs.box2d.car_racing.CarRacing`` (``CarRacing-v3``) for the same
seed and actions, with the same constructor options, and the same
``render()`` output for ``render_mode="rgb_array"``; ``"human"`` rendering
falls back to the parent.  Physics, track generation, rewards, ``step`` and
``reset`` are inherited unchanged; only the renderer behind the observations is
rewritten.  Nearly all of the parent's step time is spent rendering, mostly in
Python overhead around ~800 polygons per frame of which ~35 pass its cull and
~25 actually touch the visible window.

The renderer makes the same pygame draw calls, in the same order, with the
same coordinates and colours as the parent, except for calls that provably
cannot change an observed pixel.  The tricks, and why each one is exact:

1. **Vectorised transform and cull.**  The grass and road polygon vertices are
   stored once per track as float64 arrays.  Each frame they are rotated,
   zoomed and translated with numpy, performing the same IEEE double
   operations in the same order as pygame-ce's ``Vector2.rotate_rad`` (angle
   reduced with ``fmod`` into ``[0, 2*pi)``, multiples of 90 degrees
   special-cased, otherwise ``c*x - s*y`` and ``s*x + c*y``) followed by the
   parent's ``x * zoom + tx``, so the coordinates are bit-identical.  The
   parent's bounding-box cull is evaluated on these same numbers.  A cheap,
   conservative world-space distance test first drops polygons far from the
   camera (it keeps every polygon that could pass the exact tests).
2. **Invisible polygons are skipped.**  gfxdraw truncates coordinates to
   integers (moving them < 1 px) and both the filled polygon and its
   anti-aliased outline stay within 1 px of the integer bounding box, clipped
   to the surface.  So a polygon whose bounding box lies more than
   ``_OFFSCREEN_MARGIN`` px outside the visible part of the canvas changes no
   visible pixel.  The visible part excludes the ``_HUD_ROWS`` canvas rows that
   end up under the parent's black indicator bar (which overwrites them
   completely after the flip).  Drawing into those rows, or leaving stale
   pixels there, only affects those same pixels.  Coordinates stay far below
   the int16 range, so gfxdraw's int16 conversion cannot wrap.
3. **Background fill.**  The background "field" polygon is drawn unclipped and
   normally covers the whole window.  When every window corner lies more than
   ``_FIELD_MARGIN`` px inside every edge of the transformed field, neither the
   filled polygon's integer edges nor its anti-aliased outline reach the
   window, so the result is the window filled with the background colour:
   a fill with the exact pixel value gfxdraw writes for that colour.
   Otherwise (zoom-in at the start, near the playfield's edge) the exact
   polygon calls are made.  Fills are done with numpy rather than
   ``Surface.fill``: same values, but SDL's SSE fill uses non-temporal stores
   that push the freshly filled canvas out of the caches, which made the
   drawing and scaling that follow it far slower.
4. **No full-resolution flip.**  The parent flips the 1000x800 frame, draws the
   indicator bar, then ``smoothscale``s it to 96x96 (or 600x400).  pygame's
   smoothscale shrinks along x into a temporary buffer and then along y; with
   only one dimension changing it runs only that pass, so the two passes can
   be run separately with identical results.  The x pass works row by row: it
   is applied to the unflipped canvas rows and, separately, to the indicator
   bar's rows (drawn by the parent's code on their own surface); the small
   x-shrunk image is then flipped with numpy and the y pass run.  When an
   indicator is taller than the bar the full frame is built instead, with a
   numpy row-reversed copy as the flip.
5. **Reused surfaces** instead of two 1000x800 allocations per frame, and the
   observation read with ``pygame.image.tobytes`` (the same RGB values as the
   parent's transposed ``pixels3d`` copy, but C-contiguous).
6. **Cached font and score text.**  The parent builds a ``Font`` (reading the
   TTF file) and renders the score on every frame.  The font is built once and
   rendered text surfaces are cached by string; rendering is deterministic.
7. **Vectorised car.**  Box2D's ``b2Transform * b2Vec2`` is float32
   ``(c*x - s*y) + px`` (no FMA on x86-64), reproduced exactly with numpy
   float32 arrays for all car vertices at once, then rotated and zoomed like
   the track; the same ``pygame.draw`` calls are made in the same order.
8. **Road tile colours** (numpy arrays that the contact listener overwrites in
   place) are made rows of one array, so all visible tiles' colours are read
   at once; values and in-place updates are unchanged.

Not kept from the parent: ``self.surf`` (its last full-resolution frame) is
not updated by the fast path.  The float reproductions assume no fused
multiply-add in pygame-ce's and Box2D's builds (true for the x86-64 wheels).

``tests/test_fast_carracing.py`` checks frame-by-frame equality against
``CarRacing-v3`` and the assumptions above (rotation bit-exactness, bar
coverage, the background fill, invisible polygons).
"""

from __future__ import annotations

import math

import numpy as np
import pygame
from gymnasium.envs.box2d import car_dynamics
from gymnasium.envs.box2d.car_racing import (
    GRASS_DIM,
    MAX_SHAPE_DIM,
    PLAYFIELD,
    SCALE,
    STATE_H,
    STATE_W,
    VIDEO_H,
    VIDEO_W,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
    CarRacing,
)
from pygame import gfxdraw

# pygame-ce's math.c constants used by Vector2.rotate_rad.
_TWO_PI = 2.0 * math.pi
_HALF_PI = math.pi / 2.0
_VECTOR_EPSILON = 1e-6

# A polygon whose bounding box is this many pixels outside the window draws
# nothing (integer truncation moves vertices < 1 px, anti-aliasing adds 1 px).
_OFFSCREEN_MARGIN = 3.0
# Minimum distance (in pixels) between any window corner and any edge of the
# transformed background field for the field to be drawn with a plain fill.
_FIELD_MARGIN = 4.0
# Rows at the bottom of the final frame that the black indicator bar,
# ``pygame.draw.polygon`` of ``[(W, H), (W, H - 5h), (0, H - 5h), (0, H)]``
# with ``h = H / 40``, completely overwrites (rows 700..799, all columns).
_HUD_ROWS = 100
# Four True bytes (numpy bools) read as one uint32, whatever the byte order.
_ALL4 = np.uint32(0x01010101)


def _rotation(angle: float) -> tuple[int, float, float]:
    """Classify a rotation the way pygame-ce's ``_vector2_rotate_helper`` does.

    Returns ``(quadrant, cos, sin)``: ``quadrant`` is 0..3 for the special-cased
    exact rotations by 0/90/180/270 degrees, or -1 for the general case, in
    which ``cos``/``sin`` are those of the angle reduced to ``[0, 2*pi)``.
    """
    a = math.fmod(angle, _TWO_PI)
    if a < 0:
        a += _TWO_PI
    if math.fmod(a + _VECTOR_EPSILON, _HALF_PI) < 2 * _VECTOR_EPSILON:
        return int((a + _VECTOR_EPSILON) / _HALF_PI) % 4, 1.0, 0.0
    return -1, math.cos(a), math.sin(a)


def _transform(rot, x, y, zoom: float, tx: float, ty: float):
    """``Vector2((x, y)).rotate_rad(angle) * zoom + (tx, ty)``, bit for bit.

    Works elementwise on numpy float64 arrays as well as on Python floats.
    """
    quadrant, c, s = rot
    if quadrant == -1:
        x, y = c * x - s * y, s * x + c * y
    elif quadrant == 1:
        x, y = -y, x
    elif quadrant == 2:
        x, y = -x, -y
    elif quadrant == 3:
        x, y = y, -x
    return x * zoom + tx, y * zoom + ty


def _grass_polygons() -> list[list[tuple[float, float]]]:
    """The parent's grass patches, built with the same float expressions."""
    grass = []
    for x in range(-20, 20, 2):
        for y in range(-20, 20, 2):
            grass.append(
                [
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + GRASS_DIM),
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + GRASS_DIM),
                ]
            )
    return grass


class FastCarRacing(CarRacing):
    """``CarRacing`` with a faster renderer that produces identical pixels.

    Accepts the same constructor arguments as
    :class:`gymnasium.envs.box2d.car_racing.CarRacing`.  See the module
    docstring for the optimisations and why each one is exact.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._grass_xy = np.array(_grass_polygons(), dtype=np.float64)
        self._poly_xy: np.ndarray | None = None  # (n_polys, 8) x0..x3 y0..y3: grass, road
        self._poly_cx: np.ndarray | None = None  # centroids, world units
        self._poly_cy: np.ndarray | None = None
        self._poly_reach: np.ndarray | None = None  # see _create_track
        self._tile_colors: np.ndarray | None = None  # (n_tiles, 3)
        self._poly_tile: np.ndarray | None = None  # road polygon -> tile, -1: border
        self._fixed_colors: list = []  # road polygon -> int colour of borders
        self._canvas: pygame.Surface | None = None
        self._frame: pygame.Surface | None = None
        self._scale_buffers: dict[tuple[int, int], tuple] = {}
        self._font: pygame.font.Font | None = None
        self._text_cache: dict[str, pygame.Surface] = {}
        self._fill_colors: dict[tuple, int] = {}
        self._car_cache: tuple | None = None

    # ------------------------------------------------------------------ track
    def _create_track(self):
        success = super()._create_track()
        if success:
            self._prepare_track()
        return success

    def _prepare_track(self):
        """Per-track arrays for the renderer (called after ``_create_track``)."""
        road = np.array([poly for poly, _ in self.road_poly], dtype=np.float64)
        polys = np.concatenate([self._grass_xy, road.reshape(-1, 4, 2)])
        px, py = polys[:, :, 0], polys[:, :, 1]
        self._poly_xy = np.concatenate([px, py], axis=1)
        self._poly_cx = px.mean(axis=1)
        self._poly_cy = py.mean(axis=1)
        radius = np.hypot(px - self._poly_cx[:, None], py - self._poly_cy[:, None]).max(axis=1)
        # Every point of a polygon's bounding box is within sqrt(2)*radius of
        # its centroid; 1.5 (and +1) leaves a wide margin for rounding.
        self._poly_reach = 1.5 * radius + 1.0

        # Tile colours are numpy arrays that FrictionDetector overwrites in
        # place on contact (``tile.color[:] = road_color``).  Make each one a
        # row of a single array, so the colours of all visible tiles can be
        # read at once; the values and the in-place update are unchanged.
        tile_colors = np.array([t.color for t in self.road])
        tile_of = {id(t.color): i for i, t in enumerate(self.road)}
        rows = [tile_colors[i] for i in range(len(self.road))]
        road_poly, poly_tile, fixed_colors = [], [], []
        for poly, color in self.road_poly:
            i = tile_of.get(id(color), -1)
            poly_tile.append(i)
            if i >= 0:
                road_poly.append((poly, rows[i]))
                fixed_colors.append(None)
            else:  # red/white border: a constant tuple
                road_poly.append((poly, color))
                fixed_colors.append([int(c) for c in color])
        for t, row in zip(self.road, rows, strict=True):
            t.color = row
        self.road_poly = road_poly
        self._tile_colors = tile_colors
        self._poly_tile = np.array(poly_tile, dtype=np.intp)
        self._fixed_colors = fixed_colors

    # ----------------------------------------------------------------- render
    def _render(self, mode: str):
        if mode not in ("state_pixels", "rgb_array") or self._poly_xy is None:
            return super()._render(mode)

        if not pygame.font.get_init():
            self._font = None  # pygame.quit() since the last frame: rebuild it
        pygame.font.init()
        if self.clock is None:
            self.clock = pygame.time.Clock()
        if "t" not in self.__dict__:
            return  # reset() not called yet

        if self._canvas is None:
            self._canvas = pygame.Surface((WINDOW_W, WINDOW_H))
        canvas = self._canvas

        assert self.car is not None
        # computing transformations (same expressions as the parent)
        angle = -self.car.hull.angle
        zoom = 0.1 * SCALE * max(1 - self.t, 0) + ZOOM * SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (WINDOW_W / 2 + trans[0], WINDOW_H / 4 + trans[1])
        rot = _rotation(angle)

        self._draw_road(canvas, zoom, trans, angle, rot)
        self._draw_car(canvas, zoom, trans, rot, mode != "state_pixels")

        # showing stats
        indicators = self._indicator_polygons()
        text = self._score_text(f"{self.reward:04.0f}")
        text_rect = text.get_rect()
        text_rect.center = (60, WINDOW_H - WINDOW_H * 2.5 / 40.0)

        size = (VIDEO_W, VIDEO_H) if mode == "rgb_array" else (STATE_W, STATE_H)
        bar_top = WINDOW_H - _HUD_ROWS
        inside_bar = text_rect.top >= bar_top and all(
            y >= bar_top + 1 for points, _ in indicators for _, y in points
        )
        if inside_bar:
            scaled = self._scale_split(canvas, indicators, text, text_rect, size)
        else:
            # an indicator reaches above the bar: build the whole frame
            frame = self._flip_vertical(canvas)
            self._draw_hud(frame, indicators, text, text_rect)
            scaled = pygame.transform.smoothscale(frame, size)
        # The parent's ``np.transpose(np.array(pixels3d(scaled)), (1, 0, 2))``
        # (same values; the array is C-contiguous instead of a transposed view).
        width, height = size
        rgb = bytearray(pygame.image.tobytes(scaled, "RGB"))
        return np.frombuffer(rgb, dtype=np.uint8).reshape(height, width, 3)

    def _draw_road(self, surf, zoom, trans, angle, rot):
        tx, ty = trans

        # background field
        b = PLAYFIELD
        field = [_transform(rot, x, y, zoom, tx, ty) for x, y in ((b, b), (b, -b), (-b, -b), (-b, b))]
        # numpy writes the same 32-bit values as Surface.fill, but with ordinary
        # stores: SDL's SSE fill uses non-temporal stores, which evict the
        # canvas from the caches just before it is drawn on and scaled.
        covered = _covers_window(field)
        pixels = pygame.surfarray.pixels2d(surf).T  # (H, W) view
        if covered:
            # canvas rows [0, _HUD_ROWS) end up under the indicator bar
            pixels[_HUD_ROWS:] = self._fill_color(self.bg_color)
        else:
            pixels[...] = 0  # a fresh Surface, as the parent's
        del pixels  # release the surface lock
        if not covered:
            gfxdraw.aapolygon(surf, field, self.bg_color)
            gfxdraw.filled_polygon(surf, field, self.bg_color)

        # Conservative pre-selection: polygons whose centroid is within reach
        # of the window centre (in world units).
        dx = (WINDOW_W / 2 - tx) / zoom
        dy = (WINDOW_H / 2 - ty) / zoom
        c, s = math.cos(angle), math.sin(angle)
        wx, wy = c * dx + s * dy, c * dy - s * dx  # rotate by -angle
        half_diag = math.hypot(WINDOW_W / 2 + _OFFSCREEN_MARGIN, WINDOW_H / 2 + _OFFSCREEN_MARGIN)
        reach = self._poly_reach + half_diag / zoom
        near = np.square(self._poly_cx - wx) + np.square(self._poly_cy - wy)
        idx = np.flatnonzero(near <= np.square(reach))
        if idx.size == 0:
            return

        # exact coordinates, the parent's cull, and the off-window skip
        xy = self._poly_xy[idx]  # (k, 8): x0..x3, y0..y3
        xs, ys = _transform(rot, xy[:, :4], xy[:, 4:], zoom, tx, ty)
        # Boolean (k, 4) arrays are viewed as one uint32 per polygon: "any
        # vertex" is != 0 and "all vertices" is == 0x01010101 (one byte each).
        m, top = _OFFSCREEN_MARGIN, _HUD_ROWS - _OFFSCREEN_MARGIN
        parent_cull = (
            (xs >= -MAX_SHAPE_DIM)
            & (xs <= WINDOW_W + MAX_SHAPE_DIM)
            & (ys >= -MAX_SHAPE_DIM)
            & (ys <= WINDOW_H + MAX_SHAPE_DIM)
        ).view(np.uint32) != 0
        off_window = (
            ((xs < -m).view(np.uint32) == _ALL4)
            | ((xs > WINDOW_W + m).view(np.uint32) == _ALL4)
            | ((ys < top).view(np.uint32) == _ALL4)
            | ((ys > WINDOW_H + m).view(np.uint32) == _ALL4)
        )
        keep = np.flatnonzero(parent_cull & ~off_window)
        if keep.size == 0:
            return
        polys = idx[keep]
        pts = np.stack([xs[keep], ys[keep]], axis=-1).tolist()

        n_grass = len(self._grass_xy)
        road = polys[polys >= n_grass] - n_grass
        road_colors = self._tile_colors[self._poly_tile[road]].astype(np.int64).tolist()
        fixed_colors = self._fixed_colors
        grass_color = self.grass_color
        aapolygon = gfxdraw.aapolygon
        filled_polygon = gfxdraw.filled_polygon
        k = 0
        for i, poly in zip(polys.tolist(), pts, strict=True):
            if i < n_grass:
                color = grass_color
            else:
                # the parent's ``[int(c) for c in color]`` (truncation)
                color = fixed_colors[i - n_grass] or road_colors[k]
                k += 1
            aapolygon(surf, poly, color)
            filled_polygon(surf, poly, color)

    def _fill_color(self, color) -> int:
        """The exact mapped pixel value gfxdraw writes for ``color`` (cached)."""
        key = tuple(np.asarray(color).tolist())
        cached = self._fill_colors.get(key)
        if cached is None:
            if len(self._fill_colors) >= 16:  # domain_randomize: new colours per reset
                self._fill_colors.clear()
            probe = pygame.Surface((1, 1))
            gfxdraw.pixel(probe, 0, 0, color)
            cached = probe.get_at_mapped((0, 0))
            self._fill_colors[key] = cached
        return cached

    def _flip_vertical(self, canvas: pygame.Surface) -> pygame.Surface:
        """``pygame.transform.flip(canvas, False, True)`` into a reused surface.

        Rows that the indicator bar overwrites afterwards are not copied.
        """
        if self._frame is None:
            self._frame = pygame.Surface((WINDOW_W, WINDOW_H))
        src = pygame.surfarray.pixels2d(canvas).T  # (H, W) views
        dst = pygame.surfarray.pixels2d(self._frame).T
        dst[: WINDOW_H - _HUD_ROWS] = src[: _HUD_ROWS - 1 : -1]
        del src, dst  # release the surface locks
        return self._frame

    def _scale_split(self, canvas, indicators, text, text_rect, size):
        """``smoothscale(frame, size)`` without building the flipped frame.

        pygame's smoothscale shrinks along x into a temporary buffer, then
        along y; called with only one dimension changing it runs only that
        pass, so the two passes can be made separately with identical results.
        The x pass works row by row, so it is applied to the (unflipped) canvas
        rows and, separately, to the indicator bar rows (drawn on their own
        surface); the small x-shrunk image is then flipped and the y pass run.
        Only valid when the indicators stay within the bar's rows.
        """
        w, h = size
        bufs = self._scale_buffers.get(size)
        if bufs is None:
            hud = pygame.Surface((WINDOW_W, WINDOW_H))
            body = pygame.Surface((w, WINDOW_H - _HUD_ROWS))
            mid = pygame.Surface((w, WINDOW_H))
            bufs = (
                canvas.subsurface((0, _HUD_ROWS, WINDOW_W, WINDOW_H - _HUD_ROWS)),
                hud,
                hud.subsurface((0, WINDOW_H - _HUD_ROWS, WINDOW_W, _HUD_ROWS)),
                body,
                mid,
                mid.subsurface((0, WINDOW_H - _HUD_ROWS, w, _HUD_ROWS)),
                pygame.Surface((w, h)),
            )
            self._scale_buffers[size] = bufs
        canvas_rows, hud, hud_rows, body, mid, mid_hud_rows, out = bufs

        self._draw_hud(hud, indicators, text, text_rect)
        pygame.transform.smoothscale(hud_rows, (w, _HUD_ROWS), mid_hud_rows)
        pygame.transform.smoothscale(canvas_rows, (w, WINDOW_H - _HUD_ROWS), body)
        src = pygame.surfarray.pixels2d(body).T
        dst = pygame.surfarray.pixels2d(mid).T
        dst[: WINDOW_H - _HUD_ROWS] = src[::-1]
        del src, dst  # release the surface locks
        return pygame.transform.smoothscale(mid, size, out)

    def _score_text(self, string: str) -> pygame.Surface:
        text = self._text_cache.get(string)
        if text is None:
            if self._font is None:
                self._font = pygame.font.Font(pygame.font.get_default_font(), 42)
            if len(self._text_cache) >= 64:
                self._text_cache.clear()
            text = self._font.render(string, True, (255, 255, 255), (0, 0, 0))
            self._text_cache[string] = text
        return text

    # -------------------------------------------------------------------- car
    def _car_geometry(self, car):
        """Body-local vertices of the car's fixtures (constant per car)."""
        if self._car_cache is None or self._car_cache[0] is not car:
            local, body_of_vertex, plan = [], [], []
            for b, obj in enumerate(car.drawlist):
                fixtures = []
                for f in obj.fixtures:
                    vertices = f.shape.vertices
                    fixtures.append((len(local), len(vertices)))
                    local.extend(vertices)
                    body_of_vertex.extend([b] * len(vertices))
                plan.append((obj, "phase" in obj.__dict__, fixtures))
            self._car_cache = (
                car,
                np.array(local, dtype=np.float32),
                np.array(body_of_vertex, dtype=np.intp),
                plan,
            )
        return self._car_cache[1:]

    def _draw_car(self, surface, zoom, translation, rot, draw_particles):
        """``Car.draw``: the same polygons, vertices computed in one batch."""
        car = self.car
        assert car is not None
        tx, ty = translation

        if draw_particles:
            for p in car.particles:
                poly = [_transform(rot, c[0], c[1], zoom, tx, ty) for c in p.poly]
                pygame.draw.lines(surface, color=p.color, points=poly, width=2, closed=False)

        fixed_local, fixed_body, plan = self._car_geometry(car)
        size = car_dynamics.SIZE
        wheel_w = car_dynamics.WHEEL_W
        wheel_r = car_dynamics.WHEEL_R
        white_local = []  # the wheels' white stripes, body-local
        white_body = []
        draws = []  # (first vertex, number of vertices, color) in drawing order
        bodies = []  # (q.c, q.s, p.x, p.y) of each body's transform
        n_fixed = len(fixed_local)
        for b, (obj, is_wheel, fixtures) in enumerate(plan):
            trans = obj.transform
            q = trans.q
            p = trans.position
            bodies.append((q.c, q.s, p[0], p[1]))
            color = [int(c * 255) for c in obj.color]
            for start, n in fixtures:
                draws.append((start, n, color))
                if not is_wheel:
                    continue
                a1 = obj.phase
                a2 = obj.phase + 1.2  # radians
                s1 = math.sin(a1)
                s2 = math.sin(a2)
                c1 = math.cos(a1)
                c2 = math.cos(a2)
                if s1 > 0 and s2 > 0:
                    continue
                if s1 > 0:
                    c1 = np.sign(c1)
                if s2 > 0:
                    c2 = np.sign(c2)
                draws.append((n_fixed + len(white_local), 4, car_dynamics.WHEEL_WHITE))
                white_local.extend(
                    [
                        (-wheel_w * size, +wheel_r * c1 * size),
                        (+wheel_w * size, +wheel_r * c1 * size),
                        (+wheel_w * size, +wheel_r * c2 * size),
                        (-wheel_w * size, +wheel_r * c2 * size),
                    ]
                )
                white_body.extend([b] * 4)

        local, body_of_vertex = fixed_local, fixed_body
        if white_local:
            local = np.concatenate([local, np.array(white_local, dtype=np.float32)])
            body_of_vertex = np.concatenate([body_of_vertex, white_body])
        # b2Mul(transform, vertex) in float32, exactly as Box2D computes it
        t = np.array(bodies, dtype=np.float32)[body_of_vertex]
        cq, sq = t[:, 0], t[:, 1]
        vx, vy = local[:, 0], local[:, 1]
        wx = (cq * vx - sq * vy) + t[:, 2]
        wy = (sq * vx + cq * vy) + t[:, 3]
        xs, ys = _transform(rot, wx.astype(np.float64), wy.astype(np.float64), zoom, tx, ty)
        points = np.stack([xs, ys], axis=-1).tolist()
        draw_polygon = pygame.draw.polygon
        for start, n, color in draws:
            draw_polygon(surface, color=color, points=points[start : start + n])

    # ------------------------------------------------------------- indicators
    def _indicator_polygons(self) -> list:
        """The polygons of the parent's ``_render_indicators``, bar excluded.

        Same float arithmetic as the parent (``np.sqrt(np.square(a) + ...)``
        on floats is ``math.sqrt(a * a + ...)``, both correctly rounded).
        """
        W, H = WINDOW_W, WINDOW_H
        s = W / 40.0
        h = H / 40.0
        polygons = []

        def vertical_ind(place, val, color):
            points = [
                (place * s, H - (h + h * val)),
                ((place + 1) * s, H - (h + h * val)),
                ((place + 1) * s, H - h),
                ((place + 0) * s, H - h),
            ]
            polygons.append((points, color))

        def horiz_ind(place, val, color):
            points = [
                ((place + 0) * s, H - 4 * h),
                ((place + val) * s, H - 4 * h),
                ((place + val) * s, H - 2 * h),
                ((place + 0) * s, H - 2 * h),
            ]
            polygons.append((points, color))

        car = self.car
        assert car is not None
        vel = car.hull.linearVelocity
        true_speed = math.sqrt(vel[0] * vel[0] + vel[1] * vel[1])
        wheels = car.wheels
        # like the parent's ``render_if_min``, the raw value is tested
        if abs(true_speed) > 1e-4:
            vertical_ind(5, 0.02 * true_speed, (255, 255, 255))
        for place, wheel, color in (
            (7, wheels[0], (0, 0, 255)),
            (8, wheels[1], (0, 0, 255)),
            (9, wheels[2], (51, 0, 255)),
            (10, wheels[3], (51, 0, 255)),
        ):
            if abs(wheel.omega) > 1e-4:
                vertical_ind(place, 0.01 * wheel.omega, color)
        steer = wheels[0].joint.angle
        if abs(steer) > 1e-4:
            horiz_ind(20, -10.0 * steer, (0, 255, 0))
        gyro = car.hull.angularVelocity
        if abs(gyro) > 1e-4:
            horiz_ind(30, -0.8 * gyro, (255, 0, 0))
        return polygons

    @staticmethod
    def _draw_hud(surf, indicators, text, text_rect):
        """The black bar, the indicators and the score, as the parent draws them."""
        W, H = WINDOW_W, WINDOW_H
        h = H / 40.0
        pygame.draw.polygon(surf, color=(0, 0, 0), points=[(W, H), (W, H - 5 * h), (0, H - 5 * h), (0, H)])
        for points, color in indicators:
            pygame.draw.polygon(surf, points=points, color=color)
        surf.blit(text, text_rect)


def _covers_window(field: list[tuple[float, float]]) -> bool:
    """True if every window corner is > _FIELD_MARGIN px inside the polygon.

    ``field`` is a convex quadrilateral (a rotated, scaled square), so the
    window lies inside it, at that distance from all edges, iff its corners do.
    """
    corners = ((0.0, 0.0), (WINDOW_W, 0.0), (WINDOW_W, WINDOW_H), (0.0, WINDOW_H))
    sign = 0.0
    for i in range(4):
        ax, ay = field[i - 1]
        bx, by = field[i]
        ex, ey = bx - ax, by - ay
        length = math.hypot(ex, ey)
        if length == 0.0:
            return False
        for cx, cy in corners:
            dist = (ex * (cy - ay) - ey * (cx - ax)) / length
            if abs(dist) <= _FIELD_MARGIN:
                return False
            if sign == 0.0:
                sign = dist
            elif (dist > 0) != (sign > 0):
                return False
    return True
