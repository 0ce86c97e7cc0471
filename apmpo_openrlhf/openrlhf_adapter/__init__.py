"""The OpenRLHF 0.11.2 backend: config -> OpenRLHF arguments, and the APMPO extension of its
PPO-Ray pipeline (experience maker, actor loss, trainer), installed without forking OpenRLHF.

Importing this package registers a pure-torch ``flash_attn`` stand-in where flash-attn is not
installed (CPU machines), because OpenRLHF imports a few of its helpers at import time.
"""

from . import flash_attn_standin

flash_attn_standin.install()
