"""Import root of the CPU backend's stand-in packages (see ``openrlhf_adapter/vision_standin.py``).

This folder is put on ``sys.path`` / ``PYTHONPATH`` only where the real package is missing; it is
a Python package itself only so that installing apmpo_openrlhf ships it.
"""
