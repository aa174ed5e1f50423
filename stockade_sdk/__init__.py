"""The toolkit author's SDK: standard library only, so it runs inside sandbox images.

Toolkits import :func:`tool` from here. The host reads the marked functions to
build schemas; the functions themselves only ever execute inside a container.
"""

__all__: list[str] = []
