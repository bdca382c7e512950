"""A small, faithful stand-in for the AWS Price List Query API (``GetProducts``), for ``AwsOnDemandPriceSource``.

moto 5.2.5 has no ``pricing`` service, so this serves the JSON 1.1 protocol
boto3's ``pricing`` client speaks, on 127.0.0.1: ``POST /`` with
``X-Amz-Target: AWSPriceListService.GetProducts`` and a JSON body
(``ServiceCode``, ``Filters`` of ``TERM_MATCH`` on product attributes,
``FormatVersion``, ``MaxResults``, ``NextToken``). The answer is
``{"FormatVersion", "PriceList": [<JSON string per product>], "NextToken"}``
(``NextToken`` absent on the last page), as the API documents. Another
target is answered 400 ``UnknownOperationException``; a filter type other
than ``TERM_MATCH`` 400 ``InvalidParameterException``. ``raw_pages`` replaces
the answer for tests of hostile input (a page that is not JSON, an endless
``NextToken``); ``throttle`` answers ``ThrottlingException``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeAwsPricing", "ec2_product"]

TARGET = "AWSPriceListService.GetProducts"


def ec2_product(
    region: str, instance_type: str, usd_per_hour: Any, *, unit: str = "Hrs", currency: str = "USD", **attributes: str
) -> dict[str, Any]:
    """One AmazonEC2 product as GetProducts lists it (Linux, shared, no software, unless ``attributes`` say)."""
    attrs = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
        "servicecode": "AmazonEC2",
        **attributes,
    }
    sku = f"SKU{abs(hash((region, instance_type, json.dumps(attrs, sort_keys=True)))) % 10**8:08d}"
    return {
        "product": {"productFamily": "Compute Instance", "attributes": attrs, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {
                f"{sku}.JRTCKXETXF": {
                    "priceDimensions": {
                        f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                            "unit": unit,
                            "pricePerUnit": {currency: str(usd_per_hour)},
                            "description": f"${usd_per_hour} per On Demand Linux {instance_type} Instance Hour",
                        }
                    },
                    "sku": sku,
                    "effectiveDate": "2026-11-01T00:00:00Z",
                    "offerTermCode": "JRTCKXETXF",
                }
            }
        },
        "version": "20261101000000",
        "publicationDate": "2026-11-01T00:00:00Z",
    }


class FakeAwsPricing(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, products: Iterable[Mapping[str, Any]], *, page_size: int = 2) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.products = [dict(p) for p in products]
        self.page_size = page_size
        self.requests: list[dict[str, Any]] = []
        self.targets: list[str] = []
        #: answers served instead of the catalogue, in order (status, body)
        self.canned: list[tuple[int, bytes]] = []
        #: a page answered again and again with a NextToken (an endless listing)
        self.endless = False
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeAwsPricing:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def throttle(self, times: int = 1) -> None:
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        self.canned.extend([(400, body)] * times)

    def answer(self, request: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        filters = request.get("Filters") or []
        if any(f.get("Type") != "TERM_MATCH" for f in filters):
            return 400, {"__type": "InvalidParameterException", "message": "Filter type must be TERM_MATCH"}
        chosen = [
            p
            for p in self.products
            if p.get("serviceCode") == request.get("ServiceCode")
            and all(p["product"]["attributes"].get(f["Field"]) == f["Value"] for f in filters)
        ]
        start = int(request.get("NextToken") or 0)
        size = min(int(request.get("MaxResults") or 100), self.page_size)
        page = chosen[start : start + size]
        body: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": [json.dumps(p) for p in page]}
        if self.endless:
            body["NextToken"] = str(start + 1)
        elif start + size < len(chosen):
            body["NextToken"] = str(start + size)
        return 200, body


class _Handler(BaseHTTPRequestHandler):
    server: FakeAwsPricing
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        target = self.headers.get("X-Amz-Target", "")
        with self.server.lock:
            self.server.targets.append(target)
            canned = self.server.canned.pop(0) if self.server.canned else None
        if canned is not None:
            self._send(*canned)
            return
        if target != TARGET:
            error = {"__type": "UnknownOperationException", "message": f"unknown {target}"}
            self._send(400, json.dumps(error).encode())
            return
        request = json.loads(raw)
        with self.server.lock:
            self.server.requests.append(request)
        status, body = self.server.answer(request)
        self._send(status, json.dumps(body).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
