"""Configuration: one frozen dataclass per stage, grouped in `Config`, and named presets.

Presets are data (`PRESETS`), not code paths. A preset is resolved with command-line
overrides of the form ``--section.field value`` (or ``--section.field=value``) into one
immutable `Config`, which every stage writes next to its outputs.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from worldmodels.errors import ConfigError


@dataclass(frozen=True)
class EnvConfig:
    """Which environment the pipeline runs on."""

    name: str = "carracing"
    """Environment module in `worldmodels.envs` (frame preprocessing, action layout)."""
    train_id: str = "FastCarRacing-v3"
    """gymnasium id used for rollouts and controller training (bit-identical fast copy)."""
    eval_id: str = "CarRacing-v3"
    """gymnasium id used by evaluation: always the reference environment."""
    frame_size: int = 64
    """Side of the square RGB frame every stage sees."""


@dataclass(frozen=True)
class RolloutConfig:
    """Stage 1: random-policy episodes in the real environment."""

    episodes: int = 100
    """Number of episodes to collect (episode i uses env seed `seed + i`)."""
    max_steps: int = 300
    """Cap on steps per episode (the book: 300; the original code: 1000)."""
    policy: str = "brownian"
    """'random': uniform action held for `action_repeat` steps (the book);
    'brownian': a random walk on the actions (the PyTorch reimplementation);
    'steady': the original code's random-weight controller, nearly one action per episode
    (CarRacing: fast, nearly straight driving; `rollout.policies.SteadyPolicy`)."""
    action_repeat: int = 5
    """Steps a sampled action is held by the 'random' policy (`action_refresh_rate`)."""
    brownian_dt: float = 0.02
    """Time step of the Brownian policy's random walk (1/FPS)."""
    brownian_low: tuple[float, ...] = ()
    """Lower bound of the Brownian walk per action dimension (empty: the env's action box).
    The action taken is the walk clipped to the box: CarRacing `-1,0,-2` with brownian_high
    `1,0.3,0.5` drives with gas <= 0.3 and brakes on ~20 % of the steps."""
    brownian_high: tuple[float, ...] = ()
    """Upper bound of the Brownian walk per action dimension (empty: the env's action box)."""
    mix: tuple[str, ...] = ()
    """Several random policies in one folder (empty: `policy` alone). Entries are
    'COUNT POLICY [low=a/b/c] [high=a/b/c]' (low/high bound a 'brownian' walk as brownian_low/
    high do); the folder cycles through them, COUNT episodes of each per cycle, so episode i's
    policy depends on i alone. On the command line: comma-separated entries, e.g.
    `--rollouts.mix "1 steady,1 brownian low=-1/0/-2 high=1/1/0.5"`."""
    seed: int = 0
    """Base seed: env seeds and policy noise both derive from it and the episode index."""
    workers: int = 0
    """Episodes run in parallel; 0 = every CPU Ray offers."""


@dataclass(frozen=True)
class VisionConfig:
    """Stage 2: V, the vision model that compresses a frame to z."""

    model: str = "vae"
    """Name in the vision-model registry (`worldmodels.models.vision`)."""
    latent_dim: int = 32
    """Size of z."""
    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)
    """Filters of the four kernel-4 stride-2 convolutions (the paper's)."""
    decoder_channels: tuple[int, ...] = (128, 64, 32)
    """Filters of the first three transposed convolutions (the last one makes RGB)."""
    kl_tolerance: float = 0.5
    """KL per image is floored at kl_tolerance * latent_dim (the original code)."""
    kl_weight: float = 1.0
    """Weight of the KL term (beta); 1 is the paper's VAE."""
    reconstruction: str = "mse"
    """Other generative models ('ae', 'beta-vae', 'perceptual-vae', 'combined-vae',
    'two-decoder-vae'): 'mse' = summed squared error, 'bce' = summed binary cross-entropy."""
    reconstruction_weight: float = 1.0
    """'perceptual-vae' / 'combined-vae': weight of the reconstruction term (0 = perceptual
    loss alone; needs a classifier, so not as V)."""
    perceptual_weight: float = 1.0
    """'perceptual-vae' / 'combined-vae': weight of the perceptual term (squared error between
    the 1st and 2nd conv activations of a classifier for input and reconstruction)."""
    combined_pretrain_steps: int = 1000
    """'combined-vae' as V (no labels): steps the whole VAE trains before its conv layers are
    frozen (reconstruction stands in for the classifier's training)."""
    critic_steps: int = 5
    """'wgan-gp': critic updates per generator update."""
    gradient_penalty: float = 10.0
    """'wgan-gp': weight of the gradient penalty."""
    learning_rate: float = 1e-4
    """Adam step size."""
    batch_size: int = 100
    """Frames per train step."""
    epochs: int = 10
    """Passes over the training episodes (the paper: 1, its code: 10)."""
    max_steps: int = 0
    """Stop after this many train steps in all (0 = no cap)."""
    layers: str = "fast"
    """'fast': convolutions written for XLA:CPU; 'flax': flax.linen's. Same parameters."""
    devices: int = 1
    """Host devices to split each batch over (data parallel; 0 = one per CPU core). With the
    fast layers one device was faster here: XLA already spreads each step over the cores."""
    chunk_frames: int = 20000
    """Frames held in one shuffle chunk (several random episodes); bounds memory."""
    holdout_fraction: float = 0.05
    """Share of episodes kept out of training to measure reconstruction error."""
    checkpoint_every: int = 500
    """Train steps between checkpoints (and one at the end of every epoch)."""
    log_every: int = 20
    """Train steps between rows of metrics.csv."""
    seed: int = 0
    """Initialisation, shuffling and the train/held-out split."""


@dataclass(frozen=True)
class SeriesConfig:
    """Stage 3: every episode encoded by V."""

    batch_size: int = 1000
    """Frames encoded per jitted call."""


@dataclass(frozen=True)
class MDNRNNConfig:
    """Stage 4: M, the MDN-RNN that predicts the next z (and reward, done)."""

    hidden: int = 256
    """LSTM units."""
    mixtures: int = 5
    """Gaussian mixture components per latent dimension."""
    prev_reward_input: bool = False
    """Feed the previous reward to the LSTM ([z, a, r]; the book's 36 inputs)."""
    reward_head: str = "binary"
    """'binary': P(reward > 0 and not done), BCE (the book); 'regression': MSE on the reward;
    'none'."""
    done_head: bool = True
    """Predict the episode's end (BCE)."""
    predict_delta: bool = False
    """The mixture models the change z_{t+1} - z_t instead of z_{t+1} (the paper); the dream
    adds its draw to the current z. Where consecutive frames differ little (CarRacing), an M
    predicting z itself must rebuild z through the LSTM and can do worse than copying it;
    the change starts from "nothing moves"."""
    sample_z: bool = True
    """Train on z sampled from V's posterior N(mu, sigma) (the paper), or on mu itself (false).
    The agent encodes frames as mu; where many of V's dimensions have collapsed to the prior
    (sigma > 0.8, mu nearly constant: 20 of 32 in this project's CarRacing VAE, 44 of 64 in its
    Doom VAE), an M trained on draws spends itself on their noise and dreams a noisier z than C
    will see. M's checkpoint records it, and an M trained on mu dreams from mu (checkpoints
    from before that record follow this field in `train-controller`)."""
    reward_weight: float = 1.0
    """Weight of the reward head's loss beside the mixture's NLL."""
    done_weight: float = 1.0
    """Weight of the done head's loss (Doom: 10, deaths are rare in the windows)."""
    end_windows: float = 0.0
    """Share of each batch's windows that end at an episode's terminal step. A uniform window
    holds an episode's one done = 1 only if it ends there (Doom: about 1 window in 100), so the
    done head barely sees deaths; 0 = all windows uniform."""
    start_windows: float = 0.0
    """Share of each batch's windows that begin at an episode's first frame, from M's zero
    state, as every dream does (the original trained on whole episodes): M can integrate what
    it did since the start (Doom: where the player stands, how often it was hit). Such a window
    may run past its episode's end; those steps are masked out of every loss term."""
    carry_state: bool = False
    """Train on every frame of episodes of any length by truncated backpropagation: each of the
    batch's lanes reads one episode in consecutive `seq_len` windows from its first frame,
    carrying M's LSTM state from one train step to the next, and starts another episode (from
    the zero state, as a dream does) when it ends; gradients stop at window borders. Replaces
    start_windows and end_windows (with those, M never sees a frame past `seq_len`)."""
    min_log_sigma: float = -5.0
    """Bounds on each component's log sigma, so the likelihood stays finite."""
    max_log_sigma: float = 2.0
    """Upper bound on log sigma (see min_log_sigma)."""
    seq_len: int = 100
    """Steps per training sequence (the original: 999)."""
    batch_size: int = 100
    """Sequences per train step."""
    learning_rate: float = 1e-3
    """Adam step size."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    steps: int = 4000
    """Train steps in all."""
    holdout_fraction: float = 0.05
    """Share of episodes kept out of training for the held-out scores."""
    checkpoint_every: int = 500
    """Train steps between checkpoints (resumable)."""
    log_every: int = 50
    """Train steps between rows of metrics.csv."""
    eval_every: int = 0
    """Train steps between held-out evaluations (one-step NLL, next-z MSE, done recall, AUC and
    calibration), rows of mdnrnn/heldout.csv and its learning-curve plot; 0 = only at the end."""
    eval_windows: int = 64
    """Held-out windows (or whole episodes) each evaluation scores."""
    temperature: float = 1.0
    """tau for sampling (logits / tau, sigma * sqrt(tau)): dreams and the dream video."""
    init_from: str = ""
    """Start from this M (an mdnrnn params.msgpack) instead of a random one, with a fresh
    optimiser: `make iterate` retrains the previous round's M on the grown data."""
    head_only: bool = False
    """Train only the output head (mixture, reward and done); the LSTM's weights stay as they
    were, so h, which C reads, is unchanged: with `init_from` the previous C still drives as it
    did (retraining the whole M changed what h means and took a CarRacing C from 762 to 342)."""
    done_refit_steps: int = 0
    """After training, refit the done column of M's output layer on frozen h (logistic
    regression, this many Adam steps; 0 = off): h, the mixture and the reward head stay as they
    are, and the step with the lowest log loss on half of the held-out episodes is kept. The
    done head trained with M overfits the data's deaths (docs/doom-curves)."""
    done_refit_l2: float = 1e-3
    """L2 penalty on the refit done column's weights."""
    seed: int = 0
    """Initialisation, window sampling and the train/held-out split."""


@dataclass(frozen=True)
class ControllerConfig:
    """Stage 5: C, evolved with CMA-ES in the real environment or in M's dream."""

    features: str = "zh"
    """What C sees: 'zh' = [z, h] (CarRacing), 'zch' = [z, c, h] (Doom), 'z' = V only."""
    hidden: int = 0
    """0: linear a = W x + b (the paper's 867 parameters); > 0: one tanh hidden layer."""
    bias: bool = True
    """The linear controller's b. The paper's Doom controller has none (1088 parameters): a
    bias makes "always hold one action" a single free direction for CMA-ES to find."""
    dream: bool = False
    """Evolve C inside M's dream instead of the real environment (`DREAM=1`)."""
    action_map: str = "squash"
    """CarRacing: how C's outputs become [steer, gas, brake]. 'squash': steer tanh, gas and
    brake (tanh + 1) / 2 (a neutral output brakes 0.5, so the search first learns to lift the
    brake); 'original': the original code's, brake clip(tanh, 0, 1) (a neutral output brakes 0).
    Doom has one mapping ('squash')."""
    population: int = 64
    """CMA-ES candidates per generation (the paper: 64)."""
    rollouts: int = 16
    """Episodes per candidate; fitness = their mean return (every candidate sees the same
    track seeds in a generation)."""
    sigma0: float = 0.1
    """CMA-ES's initial step size."""
    init_from: str = ""
    """Start the search at this controller (a .msgpack, e.g. a dream-trained best.msgpack)
    instead of at zero: "dream then real"."""
    generations: int = 100
    """CMA-ES generations in all (a rerun continues to this count)."""
    max_steps: int = 1000
    """Episode cap in the real environment."""
    stall_steps: int = 0
    """Training only (never evaluation): end a real-env episode after this many steps without
    a positive reward (the car has left the road or stopped), keeping the return so far.
    Saves most of the steps bad candidates would waste; 0 = full episodes as in the paper."""
    check_start: bool = False
    """With `init_from`: score the start C on the checks before the first generation and keep it
    (best.msgpack, generation 0) unless a later check beats it, so a search that only loses
    in the checks' game hands back the C it started from."""
    dream_max_steps: int = 1000
    """Episode cap in the dream."""
    dream_done: str = "threshold"
    """How a dreamed episode ends from M's done head: 'threshold' (P(done) > 0.5, the paper) or
    'sample' (done ~ Bernoulli(P(done)) at every step: a death M finds likely but never sure
    of still happens at its rate, so C cannot live in states M is unsure about)."""
    dream_done_scale: float = 1.0
    """M's P(done) is multiplied by this (capped at 1) before either rule: above 1 a harder
    dream, where every risk M sees costs more (the paper's dreams were harder than the game)."""
    temperature: float = 1.0
    """tau of the dream (M's sampling temperature while training C there)."""
    dream_worlds: tuple[str, ...] = ()
    """Other Ms to dream in (their `mdnrnn/` folders, or run dirs holding one; comma-separated
    on the command line): each candidate's rollouts, and the dream checks' episodes, are split
    evenly among them (so their counts must be multiples of how many there are), while C's h
    and c still come from the run's own M reading the dreamed frames, as it reads real ones in
    the game. A C that exploits one M's blind spot fails in the others. List the run's own M
    (e.g. RUN) to dream in it too. () = the run's own M dreams (the paper)."""
    dream_ensemble: str = ""
    """With `dream_worlds`: '' splits the episodes among the worlds; 'mean' or 'max' dreams every
    episode in all of them at once (each M's LSTM reads the same frames, a member drawn at
    random at each step gives the next z, reward is the members' mean, P(done) their mean or
    their largest): a C cannot pass through a state one M finds deadly by dreaming it in
    another."""
    eval_every: int = 5
    """Generations between real-environment evaluations of the best candidate."""
    eval_episodes: int = 8
    """Episodes of each periodic check of the best candidate (the paper: 1,024 every 25 generations)."""
    checks: str = "real"
    """Where those periodic checks (which pick best.msgpack) run: 'real' (train_id), or 'dream'
    (M's dream on fixed keys; with `dream`, C never sees the real game before evaluation)."""
    check_worlds: tuple[str, ...] = ()
    """With checks 'dream': held-out Ms (as `dream_worlds` names them) whose dreams score the
    checks instead of the training dream; the check episodes split evenly among them, C's h and
    c still come from the run's own M. C learns to exploit the errors of the M it trains in,
    not those of an M trained apart (another `mdnrnn.seed` on the same data), so the held-out
    dream's pick is one C has not fitted to (on CarRacing it did not pick better for the game:
    docs/carracing.md, held-out Ms). () = the checks dream where C trains."""
    workers: int = 0
    """Ray tasks in flight for real-env episodes; 0 = every CPU Ray offers."""
    episode_timeout: float = 900.0
    """Seconds a worker's batch of episodes may take before it is cancelled and rerun."""
    seed: int = 0
    """CMA-ES's sampling and the episodes' env seeds."""


@dataclass(frozen=True)
class EvalConfig:
    """`make evaluate`: scoring an agent in gymnasium's own environment."""

    episodes: int = 100
    """Episodes scored (the paper: 100)."""
    seed: int = 0
    """Episode i runs on env seed `seed + i`."""
    max_steps: int = 1000
    """Episode cap (CarRacing-v3 itself ends at 1,000; Doom at 2,100)."""
    videos: bool = True
    """Record the best and the worst episode (replayed; the agent is deterministic)."""


@dataclass(frozen=True)
class IterateConfig:
    """`make iterate`: one round of the paper's "iterative training procedure" (Ha & Schmidhuber
    2018): the current agent plays the real env (exploring now and then), M is retrained on all
    episodes so far, and C is evolved again in the new dream. Round k lives in RUN/round<k>."""

    episodes: int = 500
    """Agent-played episodes collected in a round (env seeds `rollouts.seed + 10_000_000 * k + i`,
    apart from the random rollouts' and evaluation's)."""
    explore: float = 0.1
    """Share of steps whose action comes from the preset's random rollout policy instead of C
    (which runs on underneath, so a Brownian walk stays one walk). Noise on C's output would not
    do: a trained Doom C's output sits far beyond the squash's thresholds (median |y| 14)."""
    rnn_steps: int = 1000
    """M's train steps in a round, starting from the previous round's M (fresh optimiser)."""
    init_c: str = "scratch"
    """Where a round's CMA-ES search starts: 'scratch' (zero, the paper) or 'previous' (the
    previous round's C, so each round refines the last one's driving in the new dream)."""
    rounds: int = 3
    """`make iterate-all`: rounds 1..rounds, each skipped once finished (its eval/summary.json)."""
    exploit_share: float = 0.0
    """Share of the round's agent episodes played by the previous round's dream favourite
    (controller/best_fitness.msgpack, the candidate with the highest search fitness) instead of its
    kept C: where C exploits a wrong dream, those episodes show M what the real env does there.
    0 = the paper's round (the kept C plays every episode)."""
    refit_c: bool = False
    """Carry the previous round's C across M's retraining before the search starts from it
    (needs init_c 'previous'): the linear C on [z, h] whose outputs on the new h best match, in
    least squares, the old C's on the old h along this round's agent episodes
    (worldmodels/train/c_refit.py) -> RUN/round<k>/c_refit. Without it a C evolved on the old h
    reads a retrained LSTM's h as noise."""


@dataclass(frozen=True)
class SweepConfig:
    """`make temperature-sweep`: C trained in the dream at each tau, scored in the dream and in
    the real env (the paper's Doom table). Uses the controller and eval sections for the rest."""

    temperatures: tuple[float, ...] = ()
    """tau values; () = no sweep (the stage does nothing). Doom: 0.1, 0.5, 1.0, 1.15, 1.3."""
    dream_episodes: int = 100
    """Dreamed episodes that score each trained C (at its own tau)."""
    real_episodes: int = 100
    """Episodes of env.eval_id that score each trained C (seeds eval.seed + i)."""


@dataclass(frozen=True)
class SharingConfig:
    """`make knowledge-sharing`: two networks, each trained on half the classes, share what they
    learned through generative models (SEEDS.md section 3); also `make vae-pictures`."""

    data: str = ""
    """'' = scikit-learn's bundled digits; else MNIST/FashionMNIST IDX files (a folder or one of
    the files, optionally .gz) or a Keras mnist.npz. Never downloaded."""
    image_size: int = 16
    """Side the 8x8 digits are resized to (bilinear); MNIST-format files keep their own size."""
    seeds: int = 10
    """Repetitions (class split, initialisations, samples); tables give mean +- std over them."""
    seed: int = 0
    """Base seed of the repetitions."""
    split: tuple[int, ...] = ()
    """Classes of the first network (the second gets the rest); () = a random half per seed."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """Filters of the 4 conv layers (kernel 3, strides 1/2/2/1) of classifiers, encoders and,
    mirrored, decoders."""
    latent_dim: int = 8
    """The VAEs' z size."""
    batch_size: int = 64
    """Images per train step."""
    learning_rate: float = 1e-3
    """Adam step size."""
    classifier_epochs: int = 30
    """Epochs of each half's classifier."""
    vae_epochs: int = 60
    """Epochs of each half's generative model."""
    finetune_epochs: int = 20
    """Passes over the merged generated set (a selected subset gets as many steps as the whole set)."""
    finetune_learning_rate: float = 5e-4
    """Adam step size while fine-tuning on the merged generated set."""
    samples_per_class: int = 400
    """Images each generative model generates per class of its half (the source: 5,000)."""
    selection_threshold: float = 0.9
    """Best-sample selection keeps generated images whose top class probability exceeds this."""
    reconstruction: str = "bce"
    """'mse' or 'bce' (summed per image)."""
    perceptual_weight: float = 1.0
    """'perceptual-vae' / 'combined-vae': weight of the perceptual term."""
    kl_weight: float = 1.0
    """Weight of the KL term (beta)."""


@dataclass(frozen=True)
class DistillConfig:
    """`make distillation`: a teacher on a Big split guides a student on a Small split through a
    mapping phi between domains (SEEDS.md section 4)."""

    data: str = ""
    """Domain of experiments 1-3 and the student's domain of experiment 4: '' = scikit-learn
    digits, else MNIST-format files (FashionMNIST in the source)."""
    teacher_data: str = ""
    """Teacher domain of experiment 4 (MNIST in the source); '' = a transformed copy of the
    student's domain (each image rotated 90 degrees and its intensities inverted)."""
    image_size: int = 16
    """Side the 8x8 digits are resized to; MNIST-format files keep their own."""
    small_size: int = 100
    """Images in the Small split (the student's); the rest of train is Big (the teacher's)."""
    seeds: int = 3
    """Student runs per arm (curves are the mean over them)."""
    seed: int = 0
    """Base seed of the student runs."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """Filters of the 4 conv layers of teacher and student."""
    batch_size: int = 32
    """Images per train step."""
    learning_rate: float = 1e-3
    """Adam step size."""
    teacher_epochs: int = 20
    """Epochs of the teacher on the Big split."""
    student_epochs: int = 40
    """Epochs of each student on the Small split."""
    temperature: float = 4.0
    """T in f = softmax(v / T) and g = softmax(z / T) (training and the reported cross-entropy). At
    T = 1 the teacher's probabilities on the student's images are nearly its hard labels and
    the student gained no accuracy here; T = 4 passes on the teacher's similarities."""
    weight: float = 1.0
    """lambda, the weight of the distillation term."""
    noise_std: float = 0.1
    """phi of experiment 2: Gaussian noise N(0, noise_std) on the teacher's inputs."""
    vae_latent_dim: int = 16
    """z size of experiment 4's two-decoder VAE."""
    vae_epochs: int = 200
    """Epochs of the two-decoder VAE (phi of experiment 4) over the Small split's pairs."""
    experiments: tuple[str, ...] = ("identity", "noise", "dilated", "two-decoder")
    """Which phi to run."""


@dataclass(frozen=True)
class Config:
    """Everything one run needs, stage by stage."""

    preset: str = "default"
    env: EnvConfig = field(default_factory=EnvConfig)
    rollouts: RolloutConfig = field(default_factory=RolloutConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    series: SeriesConfig = field(default_factory=SeriesConfig)
    mdnrnn: MDNRNNConfig = field(default_factory=MDNRNNConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    iterate: IterateConfig = field(default_factory=IterateConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return _from_dict(cls, data, prefix="")


# ---------------------------------------------------------------------------------------
# Presets: each is a set of overrides on the dataclass defaults.

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Seconds: used by every test.
    "tiny": {
        "rollouts": {"episodes": 4, "max_steps": 60, "workers": 2},
        "vision": {"encoder_channels": (4, 8, 8, 16), "decoder_channels": (8, 8, 4),
                   "latent_dim": 8, "batch_size": 16, "epochs": 2, "chunk_frames": 100,
                   "checkpoint_every": 5, "log_every": 2, "holdout_fraction": 0.25},
        "series": {"batch_size": 32},
        "mdnrnn": {"hidden": 16, "mixtures": 2, "seq_len": 20, "batch_size": 8, "steps": 12,
                   "checkpoint_every": 5, "log_every": 2, "holdout_fraction": 0.25},
        "controller": {"population": 6, "rollouts": 2, "generations": 2, "max_steps": 40,
                       "dream_max_steps": 40, "eval_every": 1, "eval_episodes": 2, "workers": 2},
        "eval": {"episodes": 2, "max_steps": 40},
        "sharing": {"image_size": 8, "seeds": 2, "channels": (4, 8, 8, 8), "latent_dim": 4, "classifier_epochs": 2,
                    "vae_epochs": 2, "finetune_epochs": 1, "samples_per_class": 10, "batch_size": 32},
        "distill": {"image_size": 8, "seeds": 1, "small_size": 40, "channels": (4, 8, 8, 8), "teacher_epochs": 1,
                    "student_epochs": 2, "vae_latent_dim": 4, "vae_epochs": 2},
    },
    # The whole pipeline in minutes on a laptop-class CPU.
    "quick": {
        "rollouts": {"episodes": 100, "max_steps": 300},
        "vision": {"epochs": 4},
        "mdnrnn": {"seq_len": 100, "batch_size": 64, "steps": 600, "checkpoint_every": 200},
        "controller": {"population": 16, "rollouts": 2, "generations": 16, "max_steps": 300,
                       "eval_every": 5, "eval_episodes": 4},
        "eval": {"episodes": 8, "max_steps": 1000},
        "sharing": {"seeds": 3, "vae_epochs": 20, "classifier_epochs": 20, "finetune_epochs": 5,
                    "samples_per_class": 200},
        "distill": {"seeds": 2, "student_epochs": 30, "vae_epochs": 100},
    },
    # Hours on a 2-core machine.
    "default": {
        "rollouts": {"episodes": 2000, "max_steps": 1000},
    },
    # The paper's sizes: for a Ray cluster.
    "paper": {
        "rollouts": {"episodes": 10000, "max_steps": 1000},
    },
}

# CarRacing's C trained only in the dream from random-policy data (issue 5's dream-only target; the
# docs/carracing.md, 2026-12-02): Brownian episodes alone never show the car driving fast
# or steering at speed, so M's dream has nothing to pay a driving C for. One folder cycles through
# four random policies (per 23 episodes: 5 Brownian, 10 `steady` = nearly straight at gas ~0.5,
# 4 Brownian with gas <= 0.3 and a brake walk in [-2, 0.5], 4 with that brake walk and gas up to 1);
# C trains strictly in M's dream (checks in the dream too) and meets the game in `make evaluate`.
# 2026-12-02: `make all` 65 min with 20 generations -> 234.7 +- 79.2 over 100 episodes; 40 generations
# (the first 20 identical) keep generation 30's C -> 517.7 +- 174.0; 80 keep generation 70's, no better.
PRESETS["carracing-dream"] = {
    "rollouts": {"episodes": 2300, "max_steps": 1000,
                 "mix": ("5 brownian", "10 steady", "4 brownian low=-1/0/-2 high=1/0.3/0.5",
                         "4 brownian low=-1/0/-2 high=1/1/0.5")},
    "vision": {"max_steps": 4000},
    "mdnrnn": {"steps": 3000},
    "controller": {"dream": True, "checks": "dream", "temperature": 1.0, "population": 64, "rollouts": 8,
                   "generations": 40, "eval_episodes": 32},
    "eval": {"episodes": 100},
}

# DoomTakeCover, trained entirely in the dream (SEEDS.md section 2): V z = 64, M with an LSTM of
# 512 and a done head (no reward head: the dream pays 1 per step, i.e. frames survived), C on
# [z, c, h] with one output cut into left / stay / right; its periodic checks run in the dream
# too, so C meets the real game only in `make evaluate` and the temperature sweep. Rollouts take
# a Brownian walk of the action (it reaches the walls, which hold-5 random play almost never
# does, so M learns what happens there), and a dreamed death is drawn from M's P(done) at each
# step rather than waiting for P(done) > 0.5 (M's done head is calibrated, ~1 death per held-out
# episode, but passes 0.5 at only ~40 % of deaths): see docs/doom.md, *How we got here*.
_DOOM_ENV = {"name": "doom", "train_id": "VizdoomTakeCover-v1", "eval_id": "VizdoomTakeCover-v1"}
_DOOM_ROLLOUTS = {"policy": "brownian", "brownian_dt": 0.03}
_DOOM_M = {"reward_head": "none", "done_head": True}
_DOOM_C = {"features": "zch", "bias": False, "dream": True, "checks": "dream", "temperature": 1.15,
           "dream_done": "sample"}
_DOOM_TAUS = (0.1, 0.5, 1.0, 1.15, 1.3)
PRESETS["doom-tiny"] = {
    **PRESETS["tiny"],
    "env": _DOOM_ENV,
    "rollouts": {**PRESETS["tiny"]["rollouts"], "policy": "random", "max_steps": 300},  # most end in a death
    "mdnrnn": {**PRESETS["tiny"]["mdnrnn"], **_DOOM_M, "end_windows": 0.5, "start_windows": 0.25},
    "controller": {**PRESETS["tiny"]["controller"], **_DOOM_C},
    "sweep": {"temperatures": (0.5, 1.15), "dream_episodes": 4, "real_episodes": 2},
    "iterate": {"episodes": 3, "rnn_steps": 4},
}
# Minutes: every stage at a size where M's dream already ends episodes.
PRESETS["doom-quick"] = {
    "env": _DOOM_ENV,
    "rollouts": {"episodes": 200, "max_steps": 2100, **_DOOM_ROLLOUTS},
    "vision": {"latent_dim": 64, "epochs": 2},
    "mdnrnn": {**_DOOM_M, "hidden": 256, "seq_len": 100, "batch_size": 64, "steps": 600, "end_windows": 0.5,
               "done_weight": 10.0, "checkpoint_every": 200, "temperature": 1.15},
    "controller": {**_DOOM_C, "population": 16, "rollouts": 4, "generations": 10, "dream_max_steps": 2100,
                   "eval_every": 5, "eval_episodes": 16},
    "eval": {"episodes": 16, "max_steps": 2100},
    "sweep": {"temperatures": _DOOM_TAUS, "dream_episodes": 16, "real_episodes": 16},
}
# The paper's sizes for M and C. M reads whole episodes from their first frame (start_windows 1.0,
# seq_len 500 covers most: a dream starts at the reset too, and health and the place along the
# wall are only known by integrating from there). `make all` measured on a quiet 2-core machine
# (2026-12-01): rollouts 8 min (2,000 Brownian episodes, ~340 frames each), V 10, series 6, M 16,
# C 3 (12 generations: on 2026-12-01 a 30-generation search kept its generation-10 controller),
# evaluate 2, sweep 16 (4 more searches + 5 x 100 dream and real episodes): 60 min in all.
PRESETS["doom-default"] = {
    "env": _DOOM_ENV,
    "rollouts": {"episodes": 2000, "max_steps": 2100, **_DOOM_ROLLOUTS},
    "vision": {"latent_dim": 64, "epochs": 2, "max_steps": 4000},
    "mdnrnn": {**_DOOM_M, "hidden": 512, "mixtures": 5, "seq_len": 500, "batch_size": 20, "steps": 2000,
               "start_windows": 1.0, "end_windows": 0.0, "done_weight": 10.0, "temperature": 1.15},
    "controller": {**_DOOM_C, "population": 64, "rollouts": 8, "generations": 12, "dream_max_steps": 2100,
                   "eval_every": 4, "eval_episodes": 64},
    "eval": {"episodes": 100, "max_steps": 2100},
    "sweep": {"temperatures": _DOOM_TAUS, "dream_episodes": 100, "real_episodes": 100},
    "iterate": {"episodes": 1000, "explore": 0.1, "rnn_steps": 1000},
}
# The paper's Doom recipe at the budget M's held-out curve asks for (docs/doom-curves): 10,000
# Brownian episodes; V 10,000 steps of 100 frames; M 6,000 steps (on 1,900 episodes its z NLL
# flattened after ~6,000 while its done head overfitted after ~3,000, which five times the data
# should delay), scored on held-out episodes every 500 steps; the paper's C (dream only, tau 1.15,
# [z, c, h], no bias). Estimated from doom-default's stage times on 2 cores: rollouts 40 min, V 25,
# series 30, M 50, C and the tau table 20: about 2.7 h, each stage resumable.
PRESETS["doom-paper"] = {
    **PRESETS["doom-default"],
    "rollouts": {**PRESETS["doom-default"]["rollouts"], "episodes": 10_000},
    "vision": {"latent_dim": 64, "epochs": 1, "max_steps": 10_000},
    "mdnrnn": {**PRESETS["doom-default"]["mdnrnn"], "steps": 6000, "eval_every": 500},
}


PRESET_SUMMARY: dict[str, str] = {
    "tiny": "seconds: the smallest models, used by every test",
    "quick": "CarRacing, the whole pipeline in minutes on a laptop-class CPU",
    "default": "CarRacing, hours on a 2-core machine (2,000 rollouts of 1,000 steps)",
    "paper": "CarRacing at the paper's sizes (10,000 rollouts): for a Ray cluster",
    "carracing-dream": "CarRacing with C trained only in M's dream, from four random policies' data",
    "doom-tiny": "DoomTakeCover at the tiny sizes (tests)",
    "doom-quick": "DoomTakeCover, every stage in minutes; C in the dream",
    "doom-default": "DoomTakeCover at the paper's sizes for M and C, C in the dream (about an hour here)",
    "doom-paper": "DoomTakeCover with the paper's 10,000 episodes and M trained to its held-out curve (about 3 h)",
    "carracing-iterate": "CarRacing by rounds of the iterative procedure: the agent drives, M retrains, C evolves",
}
"""One line per preset, for `--help` and `make help` (a test keeps it in step with PRESETS)."""


def field_docs(cls: type) -> dict[str, str]:
    """A config dataclass's field -> the docstring under it in this file's source ('' if none)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:] + [None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = ""
            if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                text = " ".join(after.value.value.split())
            docs[node.target.id] = text
    return docs


def describe_sections(config: Config, sections: typing.Sequence[str]) -> str:
    """The fields of `sections` with their docstrings and `config`'s values, for `--help`."""
    lines = []
    for section in sections:
        part = getattr(config, section)
        lines.append(f"--{section}.FIELD (values of preset '{config.preset}'):")
        docs = field_docs(type(part))
        for f in fields(part):
            value = getattr(part, f.name)
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            lines.append(f"  --{section}.{f.name} {shown!s}")
            if docs.get(f.name):
                lines.append(f"      {docs[f.name]}")
    return "\n".join(lines)


# CarRacing by the paper's iterative procedure: the shipped agent's sizes (the default preset's V
# and M), then rounds in which the agent drives (10 % of steps Brownian, so M still sees
# recoveries and crashes), M retrains on old + new episodes, and C, starting from the previous
# round's C with the original code's action mapping, evolves in the new dream at the paper's scale
# (64 candidates x 16 dreamed episodes); its checks run in the real env on check seeds
# (2,000,000..), apart from the evaluation's. Round 1 starts from RUN's agent (`make all` or
# a copy of agents/carracing's parts).
PRESETS["carracing-iterate"] = {
    "rollouts": {"episodes": 500, "max_steps": 1000},
    "vision": {"max_steps": 3500},
    "mdnrnn": {"steps": 3000},
    "controller": {"dream": True, "checks": "real", "temperature": 1.0, "population": 64, "rollouts": 16,
                   "generations": 20, "eval_every": 5, "eval_episodes": 16, "action_map": "original"},
    "iterate": {"episodes": 200, "explore": 0.1, "rnn_steps": 1000, "init_c": "previous", "rounds": 4},
    "eval": {"episodes": 100},
}


def get_config(preset: str, overrides: typing.Sequence[str] = ()) -> Config:
    """Resolve a preset and ``--section.field value`` overrides into a `Config`."""
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown preset '{preset}'; valid presets: {', '.join(sorted(PRESETS))}"
        )
    config = Config(preset=preset)
    for section, values in PRESETS[preset].items():
        config = replace(config, **{section: replace(getattr(config, section), **values)})
    for key, raw in parse_overrides(overrides):
        config = apply_override(config, key, raw)
    return config


def parse_overrides(tokens: typing.Sequence[str]) -> list[tuple[str, str]]:
    """['--a.b', '1', '--c.d=x'] -> [('a.b', '1'), ('c.d', 'x')]."""
    pairs, i = [], 0
    tokens = list(tokens)
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ConfigError(f"expected '--section.field value', got '{token}'")
        token = token[2:]
        if "=" in token:
            key, value = token.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"override '--{token}' has no value")
            key, value = token, tokens[i + 1]
            i += 2
        pairs.append((key.replace("-", "_"), value))
    return pairs


def apply_override(config: Config, key: str, raw: str) -> Config:
    """Return `config` with the dotted field `key` set from the string `raw`."""
    parts = key.split(".")
    sections = _section_types()
    if len(parts) != 2 or parts[0] not in sections:
        raise ConfigError(
            f"unknown config field '{key}'; fields look like 'section.field' with section "
            f"one of: {', '.join(sorted(sections))}"
        )
    section_name, name = parts
    section = getattr(config, section_name)
    hints = typing.get_type_hints(type(section))
    if name not in hints:
        valid = ", ".join(f"{section_name}.{f.name}" for f in fields(section))
        raise ConfigError(f"unknown config field '{key}'; valid fields: {valid}")
    value = _coerce(raw, hints[name], key)
    return replace(config, **{section_name: replace(section, **{name: value})})


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {k: v for k, v in hints.items() if dataclasses.is_dataclass(v)}


def _coerce(raw: Any, kind: Any, key: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if kind is bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return raw
        if typing.get_origin(kind) is tuple:
            (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
            return tuple(_coerce(p, item, key) for p in raw.split(",") if p)
    except ValueError:
        raise ConfigError(f"config field '{key}' expects {_type_name(kind)}, got '{raw}'") from None
    raise ConfigError(f"config field '{key}' has unsupported type {kind}")


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"unknown config field '{prefix}{sorted(unknown)[0]}' in saved config; "
            "it was written by another version of worldmodels"
        )
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _from_dict(kind, value, prefix=f"{prefix}{name}.")
        elif typing.get_origin(kind) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def diff_configs(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Fields that differ between two config dataclasses: [(dotted name, old, new)]."""
    out = []
    for f in fields(new):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(b):
            out += diff_configs(a, b, prefix=f"{prefix}{f.name}.")
        elif a != b:
            out.append((f"{prefix}{f.name}", a, b))
    return out
