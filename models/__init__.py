"""Brain-MRI side: NIfTI I/O and preprocessing, autoencoders, anomaly scoring.

Not built yet (issue 4). ``models`` imports nothing from the project's other packages.
"""

__all__: list[str] = []
