"""What reaches the terminal during an OpenRLHF run (openrlhf_adapter/console.py), on lines in the
formats Ray, vLLM, DeepSpeed, OpenRLHF and Python print them; and the console itself in a child
process: everything written to its file descriptors 1 and 2 (Python and C level, also by a child
process) lands in pipeline.log, and only warnings and errors on the real terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from apmpo_openrlhf.openrlhf_adapter.console import LineRouter

REPO = Path(__file__).resolve().parents[2]
RAY = "\x1b[36m(RolloutRayActor pid=21600)\x1b[0m "


def shown(lines: list[str]) -> list[str]:
    router = LineRouter()
    return [line for line in lines if router.for_terminal(line)]


def test_info_lines_stay_off_the_terminal_warnings_and_errors_reach_it():
    lines = [
        "INFO 12-05 23:50:49 [core_client.py:689] [shutdown] MPClient: start timeout=default",
        RAY + "INFO 12-05 23:50:49 [utils.py:620] [shutdown] Process manager: send sigterm",
        RAY + "(Worker pid=22570) INFO 12-05 23:50:49 [multiproc_executor.py:836] Parent process exited",
        "2026-12-05 23:47:40,123\tINFO worker.py:2003 -- Started a local Ray instance.",
        "[2026-12-05 23:47:30,527] [INFO] [checkpointing.py:1] Loading the checkpoint: /x/_actor",
        RAY + "Generate samples:  50%|#####     | 8/16 [00:01<00:01,  6.00it/s]",
        "(APMPOPPOTrainerImpl pid=3) Deleted checkpoint /x/global_step1 (no metric (oldest))",
        "WARNING 12-05 23:49:09 [x.py:1] step 3: 2 of 256 responses hit the grading time limit",
        RAY + "ERROR 12-05 23:49:09 [engine.py:12] engine crashed",
        RAY + "  detail of the error, indented",
        RAY + "a plain line after it",
        "Traceback (most recent call last):",
        '  File "train.py", line 3, in <module>',
        "    main()",
        "ray.exceptions.RayTaskError(ValueError): ray::APMPOPPOTrainerImpl.fit()",
        "ValueError: apmpo group_size=8 differs from rollout.n_samples_per_prompt=16",
    ]
    assert shown(lines) == lines[7:10] + lines[11:]


def test_a_warning_is_shown_once_and_the_stacks_expected_notices_not_at_all():
    repeated = "(APMPOPolicyModelActorImpl pid={}) /x/c10d_logger.py:83: UserWarning: something odd at step {}"
    lines = [repeated.format(1, 1), "(APMPOPolicyModelActorImpl pid=1)   return func(*args, **kwargs)",
             repeated.format(1, 2), "(APMPOPolicyModelActorImpl pid=1)   return func(*args, **kwargs)",
             repeated.format(2, 3) + "\x1b[32m [repeated 2x across cluster]\x1b[0m",
             "[2026-12-05 23:47:30,527] [WARNING] [real_accelerator.py:199:get_accelerator] Setting accelerator to CPU.",
             RAY + "(Worker pid=2) WARNING 12-05 23:50:40 [layerwise.py:268] RotaryEmbedding: Failed to load weights",
             "/x/dataloader.py:759: UserWarning: 'pin_memory' argument is set as true but no accelerator is found",
             "  super().__init__(loader)"]
    assert shown(lines) == lines[:2]


def test_the_console_routes_what_the_process_and_its_children_write(tmp_path):
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        from pathlib import Path
        from apmpo_openrlhf.openrlhf_adapter.console import PipelineConsole

        with PipelineConsole(Path({str(tmp_path / 'out')!r}), 1, 0, "demo", progress=False) as console:
            print("INFO 12-05 10:00:00 [x.py:1] python-level info")
            os.write(2, b"WARNING 12-05 10:00:00 [x.py:2] fd-level warning\\n")
            subprocess.run([sys.executable, "-c", "print('INFO 12-05 [c.py:1] child info'); "
                            "import sys; print('ERROR 12-05 [c.py:2] child error', file=sys.stderr)"])
        print("after the run: on the terminal again")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    terminal = proc.stdout + proc.stderr
    log = (tmp_path / "out" / "pipeline.log").read_text()
    for text in ("python-level info", "fd-level warning", "child info", "child error"):
        assert text in log
    assert "fd-level warning" in terminal and "child error" in terminal
    assert "python-level info" not in terminal and "child info" not in terminal
    assert "after the run: on the terminal again" in proc.stdout
