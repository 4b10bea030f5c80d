"""Training: one shared loop (`loop.py`), shared losses, one small trainer per method."""

from ldct.train.alden import ALDENMethod
from ldct.train.encoder import EncoderMethod
from ldct.train.method import Method
from ldct.train.n2n25d import N2N25DMethod
from ldct.train.pan import PANMethod
from ldct.train.pdml import PDMLMethod
from ldct.train.vagan import VAGANMethod

METHODS: dict[str, type[Method]] = {m.name: m for m in (
    PANMethod, PDMLMethod, ALDENMethod, N2N25DMethod, VAGANMethod, EncoderMethod)}
