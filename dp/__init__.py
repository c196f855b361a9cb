"""Privacy: DP-SGD local training, accounting, the privacy ledger, distributed DP, audit, DPIA.

Not built yet (issues 3, 7 and 8). The package exists so the layout and the
import direction (``dp -> secagg`` for encoding only) are fixed from the start.
"""

__all__: list[str] = []
