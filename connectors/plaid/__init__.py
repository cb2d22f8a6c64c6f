"""The Plaid connector (plaid-python) and Plaid webhook verification.

Private modules; what other packages use is re-exported by :mod:`connectors`.
"""
