"""Installs wheels into an image being built, as pip would: PyPA's ``installer``.

    python3 -I install_wheels.py INSTALLER_DIR WHEELS_DIR DESTDIR

Run by the image's own python3, in a build without network, on wheels
downloaded and hash-checked on the host. A real install, not an unzip: a
wheel's ``.data`` directories go where they belong and its console scripts
are written. Packages go to ``/opt/stockade/lib`` (the library every tool
call has on its ``PYTHONPATH``), console scripts to ``/usr/local/bin`` (on
the tools' ``PATH``; their ``#!`` names ``/usr/bin/python3``), data files
under ``/usr/local``, headers under ``/usr/local/include``. Everything is
written below DESTDIR, which the next build stage copies to ``/``. An
installed file never overwrites another (two wheels claiming a path fail
the build).
"""

from __future__ import annotations

import sys
from pathlib import Path

LIBRARY = "/opt/stockade/lib"


def main() -> None:
    installer_dir, wheels, destdir = sys.argv[1:4]
    sys.path.insert(0, installer_dir)
    # Importable only now: the installer is copied into the build, not installed.
    from installer import install  # noqa: PLC0415
    from installer.destinations import SchemeDictionaryDestination  # noqa: PLC0415
    from installer.sources import WheelFile  # noqa: PLC0415

    python = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for wheel in sorted(Path(wheels).glob("*.whl")):
        with WheelFile.open(wheel) as source:
            source.validate_record()  # every file's hash, as the wheel's RECORD states it
            scheme = {
                "purelib": LIBRARY,
                "platlib": LIBRARY,
                "scripts": "/usr/local/bin",
                "data": "/usr/local",
                "headers": f"/usr/local/include/{python}/{source.distribution}",
            }
            destination = SchemeDictionaryDestination(
                scheme, interpreter="/usr/bin/python3", script_kind="posix", destdir=destdir
            )
            install(source, destination, {"INSTALLER": b"stockade\n"})
        print(f"installed {wheel.name}")


if __name__ == "__main__":
    main()
