"""The optional C converter (archive/_canonical.c); everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the package installs without it and
archive/extjson.py converts every document through python-bsonjs, to the same bytes.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mongo_backup.archive._canonical",
            sources=[
                "src/mongo_backup/archive/_canonical.c",
                "src/mongo_backup/archive/_canonical_read.c",
            ],
            depends=["src/mongo_backup/archive/_canonical.h"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
