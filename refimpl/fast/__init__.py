"""The optimised twin of ``refimpl.model``: the same step in other layouts, with Numba kernels or their NumPy
twins. The only place a backend is chosen."""
