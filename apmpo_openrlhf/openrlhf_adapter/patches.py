"""Point OpenRLHF's driver at the APMPO classes (before ``openrlhf.cli.train_ppo_ray`` runs).

- ``openrlhf.trainer.ray.ppo_actor.PolicyModelActor``: imported by the CLI module at its top, so
  it must be replaced before the module executes;
- ``openrlhf.trainer.ppo_trainer.PPOTrainer``: imported inside ``train()``;
- ``openrlhf.trainer.ray.vllm_engine.RolloutRayActor``: the engine actor that resets vLLM's encoder
  cache after every weight sync (``encoder_cache_guard.py``).

The Ray workers need no patch: they receive these classes (and import this package) by reference.
"""

from __future__ import annotations


def install_driver_patches():
    """Install the APMPO classes; returns a function that puts OpenRLHF's back."""
    import openrlhf.trainer.ppo_trainer as ppo_trainer_module
    import openrlhf.trainer.ray.ppo_actor as ppo_actor_module

    from . import encoder_cache_guard
    from .actor import APMPOPolicyModelActor
    from .trainer import APMPOPPOTrainer

    originals = (ppo_actor_module.PolicyModelActor, ppo_trainer_module.PPOTrainer)
    ppo_actor_module.PolicyModelActor = APMPOPolicyModelActor
    ppo_trainer_module.PPOTrainer = APMPOPPOTrainer
    restore_engine_actor = encoder_cache_guard.install()

    def restore() -> None:
        ppo_actor_module.PolicyModelActor, ppo_trainer_module.PPOTrainer = originals
        restore_engine_actor()

    return restore


def check_installed(cli_globals: dict) -> None:
    """Raise unless the CLI module picked up the patched classes."""
    import openrlhf.trainer.ppo_trainer as ppo_trainer_module

    from .actor import APMPOPolicyModelActor
    from .trainer import APMPOPPOTrainer

    if cli_globals.get("PolicyModelActor") is not APMPOPolicyModelActor:
        raise RuntimeError("openrlhf.cli.train_ppo_ray did not pick up APMPOPolicyModelActor")
    if ppo_trainer_module.PPOTrainer is not APMPOPPOTrainer:
        raise RuntimeError("openrlhf.trainer.ppo_trainer.PPOTrainer is not the APMPO trainer")
    from . import encoder_cache_guard

    if not encoder_cache_guard.installed():
        raise RuntimeError("openrlhf.trainer.ray.vllm_engine.RolloutRayActor is not the encoder-cache-safe actor")
