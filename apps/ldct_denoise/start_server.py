"""MONAI Label's ``start_server`` with ldct's HTTP protocol (`ldct.server.connections`).

MONAI Label's start_server calls ``uvicorn.run`` with no protocol option, so this shell adds
one to that call and runs MONAI Label's own command line unchanged."""

import functools

import uvicorn
from monailabel.main import Main

from ldct.server.connections import BoundedH11Protocol

if __name__ == "__main__":
    uvicorn.run = functools.partial(uvicorn.run, http=BoundedH11Protocol)
    Main().run()
