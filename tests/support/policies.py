"""Policy pieces several tests build on: a private home cluster beside one public spot target."""

from __future__ import annotations

from typing import Any

#: the spot offer of :func:`home_and_spot`, as its price and breaker samples name it
SPOT_KEY = "aws/us-east-1/g4dn.xlarge"


def home_and_spot() -> list[dict[str, Any]]:
    """A private ``home`` target (the local provider) and a public ``spot`` one (EC2, one offer, max $0.50/h)."""
    return [
        {"name": "home", "provider": "local", "private": True},
        {
            "name": "spot",
            "provider": "aws",
            "private": False,
            "regions": ["us-east-1"],
            "instance_types": ["g4dn.xlarge"],
            "max_price_usd_h": 0.5,
            "storage": {"uri": "s3://fp-work/aws/"},
        },
    ]
