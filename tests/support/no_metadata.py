"""No SDK in a test may reach a cloud metadata address (169.254.169.254, fd00:ec2::254).

botocore looks for instance credentials at the EC2 instance metadata service
when nothing else gave it any; azure-identity's managed identity credential
asks the Azure IMDS at the same address. On a developer's cloud VM (or a CI
runner on one) either would pick up that machine's real identity; elsewhere
it waits on a link-local address that does not answer. So every test
process, and every environment a test builds for a subprocess, carries:

- ``AWS_EC2_METADATA_DISABLED=true``: botocore never calls IMDS;
- ``AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:9``: azure-identity
  (and MSAL's managed identity client) has no switch to turn IMDS off, but
  this variable replaces the IMDS host; port 9 on loopback refuses at once;
- ``ORT_DISABLE_TELEMETRY=1``: ONNX Runtime (1.29 and later) starts a
  telemetry uploader to Microsoft when it is imported, unless this is set
  first; ``faceswap`` sets it too, but tests import onnxruntime directly.

``tests/conftest.py`` sets them all in ``os.environ`` when pytest loads it;
:func:`subprocess_env` builds a child's environment with them last, so no
``extra`` can switch them back on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["NO_METADATA_ENV", "subprocess_env"]

NO_METADATA_ENV: Mapping[str, str] = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9",
    "ORT_DISABLE_TELEMETRY": "1",
}


def subprocess_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) plus ``extra``, with the metadata guards on top."""
    return {**(os.environ if base is None else base), **extra, **NO_METADATA_ENV}
