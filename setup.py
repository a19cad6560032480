import re

from setuptools import find_packages, setup

# UTF-8 whatever the locale: rpmbuild and pip often run under LANG=C (ASCII on 3.6).
with open("src/vz7native/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

with open("README.md", encoding="utf-8") as f:
    README = f.read()

setup(
    name="vz7native",
    version=VERSION,
    description="OpenVZ/Virtuozzo 7 ploop images and containers from Python, "
                "and a Bareos file-daemon plugin built on it",
    long_description=README,
    long_description_content_type="text/markdown",
    python_requires=">=3.6",
    # The Bareos FD simulator of the tests ships as vz7native.fdsim: vz7ploop
    # selftest runs the plugin through it on the host.
    package_dir={"": "src", "vz7native.fdsim": "tests/fdsim"},
    packages=find_packages("src") + ["vz7native.fdsim"],
    package_data={"vz7native.fdsim": ["README.md", "plugins/*.py"]},
    setup_requires=["cffi>=1.12"],
    install_requires=["cffi>=1.12", "pyudev", "mfusepy"],
    cffi_modules=["build_ffi.py:make_ffibuilder", "build_ffi.py:make_walk_ffibuilder"],
    entry_points={"console_scripts": ["vz7ploop = vz7native.cli:main"]},
    zip_safe=False,
)
