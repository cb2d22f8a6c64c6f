"""The OAuth2 client side of linking a bank; import from :mod:`connectors`, not from here.

Modules named after an RFC hold what we implement ourselves (authlib covers the rest):
``rfc8414`` discovery, ``rfc9126`` pushed authorization requests, ``rfc9207`` the ``iss``
check, ``rfc7523`` ``private_key_jwt`` assertions.
"""
