"""`paretune prices update`: the feeds read recorded answers from a local HTTP server.

Each file under tests/data/prices/ holds one provider's exchanges in the documented shape
of its API (request method, address and distinguishing parameters; status; body). The
feeds send real requests through urllib; only the host is rerouted to the local server.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pricing import load_catalog
from pricing.catalog import shipped_catalog
from pricing.feeds import FeedChangedShape, FeedUnavailable, fetch_json, update_prices
from pricing.feeds.runpod import RunPodFeed
from pricing.feeds.vast import VastFeed
from tui.cli import main

RECORDED = Path(__file__).parent / "data" / "prices"
TODAY = dt.date(2026, 12, 1)
KEYS = {"LAMBDA_API_KEY": "secret-test-key"}


class Replay:
    """A local HTTP server answering each request with its recorded exchange."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, body = replay.answer(self.command, self.path, dict(self.headers))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def load(self, *names: str) -> None:
        self.exchanges = []
        for name in names:
            self.exchanges += json.loads((RECORDED / f"{name}.json").read_text())

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        # path is /<host>/<path>?<query>, as `fetch` below rewrote it.
        parts = urllib.parse.urlsplit(path)
        host, _, rest = parts.path.lstrip("/").partition("/")
        params = dict(urllib.parse.parse_qsl(parts.query))
        if "q" in params:  # Vast.ai's search is one JSON parameter
            params |= {k: str(v) for k, v in json.loads(params["q"]).items()}
        self.seen.append((method, f"{host}/{rest}", headers))
        matches = []
        for exchange in self.exchanges:
            wanted = dict(exchange["request"])
            url = urllib.parse.urlsplit(wanted.pop("url"))
            if wanted.pop("method") != method or url.path.lstrip("/") != rest:
                continue
            if url.hostname != host.partition(":")[0]:
                continue
            if all(params.get(k) == v for k, v in wanted.items()):
                matches.append((len(wanted), exchange))
        if not matches:
            return 404, {"error": f"nothing recorded for {method} {path}"}
        exchange = max(matches, key=lambda m: m[0])[1]
        return exchange["status"], exchange["body"]

    def fetch(self, request: urllib.request.Request) -> Any:
        """fetch_json, with the request's host rerouted to this server."""
        url = urllib.parse.urlsplit(request.full_url)
        port = self.server.server_address[1]
        local = f"http://127.0.0.1:{port}/{url.netloc}{url.path}" + (
            f"?{url.query}" if url.query else ""
        )
        rerouted = urllib.request.Request(
            local,
            data=request.data,
            headers=dict(request.header_items()),
            method=request.get_method(),
        )
        return fetch_json(rerouted)


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    server = Replay()
    yield server
    server.server.shutdown()


@pytest.fixture(autouse=True)
def _no_user_price_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("PARETUNE_PRICES", raising=False)


def _update(replay: Replay, path: Path, *feeds: str, env: dict[str, str] | None = None):
    catalog = load_catalog(path) if path.is_file() else shipped_catalog()
    return update_prices(
        catalog,
        path,
        feeds=list(feeds) or None,
        today=TODAY,
        fetch=replay.fetch,
        environ=KEYS if env is None else env,
    )


def test_four_feeds_update_the_user_file_with_sources_and_history(
    replay: Replay, tmp_path: Path
) -> None:
    replay.load("runpod", "vast-ai", "lambda", "azure")
    path = tmp_path / "prices.yaml"
    report = _update(replay, path)
    assert [f.feed for f in report.updated] == ["runpod", "vast-ai", "lambda", "azure"]
    assert report.written and report.backup is None

    catalog = load_catalog(path)
    h100 = catalog.offers("h100", "runpod-secure")
    assert [(o.usd_per_hour, o.checked, o.verified, o.source) for o in h100] == [
        (Decimal("2.99"), TODAY, True, "https://api.runpod.io/graphql")
    ]
    # The shipped history of the pair came along: the price on 2026-10-01 is still the old one.
    assert catalog.cheapest("h100", "runpod-secure", as_of=dt.date(2026, 10, 1)).usd_per_hour == (
        Decimal("3.49")
    )
    assert [o.usd_per_hour for o in catalog.offer_history("h100", "runpod-secure")] == [
        Decimal("3.49"), Decimal("3.99"), Decimal("2.99"), Decimal("1.75")
    ]  # fmt: skip
    # Spot prices are their own offers, not the default ones.
    spot = catalog.cheapest("h100", kind="spot")
    assert (spot.provider, spot.usd_per_hour) == ("vast-ai", Decimal("1.200"))
    assert catalog.cheapest("h100").provider == "vast-ai"  # on-demand: the median 2.20
    assert catalog.cheapest("h100").usd_per_hour == Decimal("2.200")
    # Lambda per GPU: $23.92 for 8 GPUs = 2.99 each; Azure's 8-GPU VM: 98.32 / 8.
    assert catalog.cheapest("h100", "lambda").usd_per_hour == Decimal("2.99")
    azure = catalog.offers("h100", "azure", kind=None)
    assert sorted((o.kind, o.usd_per_hour) for o in azure) == [
        ("on-demand", Decimal("12.29")),
        ("spot", Decimal("3.687")),
    ]
    # Windows and low-priority rows are not prices of the Linux VM; the second page was read.
    assert catalog.cheapest("a100-80gb", "azure").usd_per_hour == Decimal("3.673")
    assert len(catalog.offers("a100-80gb", "azure", kind=None)) == 1
    # GPUs the catalogue lacks are named, not guessed.
    assert report.feeds[0].unknown_gpus == ["NVIDIA A40"]
    assert "GH200 (96 GB)" in report.feeds[2].unknown_gpus
    # Lambda's key went in the header, never into the file.
    lambda_request = next(s for s in replay.seen if "instance-types" in s[1])
    assert lambda_request[2]["Authorization"] == "Bearer secret-test-key"
    assert "secret-test-key" not in path.read_text()
    # The shipped catalogue itself is untouched.
    assert load_catalog(None).cheapest("h100", "runpod-secure").usd_per_hour == Decimal("3.99")


def test_a_second_update_keeps_history_and_a_backup(replay: Replay, tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "providers:\n  - {id: mycloud, name: My Cloud}\n"
        "offers:\n  - {gpu: H100, provider: mycloud, usd_per_hour: '1.75', instance: 1x H100,"
        " source: 'https://example.com', checked: 2026-11-01}\n"
    )
    replay.load("runpod")
    first = _update(replay, path, "runpod")
    assert first.backup == tmp_path / "prices.yaml.bak"
    assert "mycloud" in first.backup.read_text() and "runpod" not in first.backup.read_text()
    # The user's own entries survive; the same update twice in a day is one entry, not two.
    again = _update(replay, path, "runpod")
    assert again.updated and [c.before for c in again.feeds[0].changes][:1] == [Decimal("2.99")]
    catalog = load_catalog(path)
    assert catalog.cheapest("h100", "mycloud").usd_per_hour == Decimal("1.75")
    dated = [o.checked for o in catalog.offer_history("h100", "runpod-secure")]
    assert dated.count(TODAY) == 2  # one on-demand, one spot
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"providers", "offers"}


def test_bad_feeds_keep_previous_prices_and_say_why(replay: Replay, tmp_path: Path) -> None:
    replay.load("runpod", "lambda-invalid-key", "vast-ai-changed-shape")
    path = tmp_path / "prices.yaml"
    report = _update(replay, path, "runpod", "lambda", "vast-ai", "azure")
    by_feed = {f.feed: f for f in report.feeds}
    assert by_feed["runpod"].updated
    assert by_feed["lambda"].reason.startswith("HTTP 401")
    assert "API key was invalid" in by_feed["lambda"].reason
    assert "offers[0] has no field 'dph_total'" in by_feed["vast-ai"].reason
    assert by_feed["azure"].reason.startswith("HTTP 404")  # nothing recorded: an error page
    catalog = load_catalog(path)
    assert catalog.cheapest("h100", "vast-ai").usd_per_hour == Decimal("2.40")  # as shipped
    assert catalog.cheapest("h100", "lambda").checked == dt.date(2026, 9, 25)


def test_a_feed_needing_a_key_is_skipped_without_one(replay: Replay, tmp_path: Path) -> None:
    report = _update(replay, tmp_path / "prices.yaml", "lambda", env={})
    assert not report.updated and not report.written
    assert "needs an API key in $LAMBDA_API_KEY" in report.feeds[0].reason
    assert not (tmp_path / "prices.yaml").exists()


def test_changed_shapes_are_named(replay: Replay) -> None:
    replay.load("vast-ai-changed-shape")
    with pytest.raises(FeedChangedShape, match="offers\\[0\\] has no field 'dph_total'"):
        VastFeed().read(replay.fetch, None)
    replay.exchanges = [
        {
            "request": {"method": "POST", "url": "https://api.runpod.io/graphql"},
            "status": 200,
            "body": {"errors": [{"message": 'Cannot query field "securePrice"'}]},
        }
    ]
    with pytest.raises(FeedUnavailable, match="Cannot query field"):
        RunPodFeed().read(replay.fetch, None)
    replay.exchanges[0]["body"] = "<html>maintenance</html>"
    with pytest.raises(FeedUnavailable, match="not JSON"):
        RunPodFeed().read(replay.fetch, None)


def test_cli_reports_and_exit_codes(
    replay: Replay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pricing.feeds.update as update

    monkeypatch.setattr(update, "fetch_json", replay.fetch)
    path = tmp_path / "mine.yaml"
    monkeypatch.setenv("PARETUNE_PRICES", str(path))
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    replay.load("runpod", "vast-ai-changed-shape")
    result = CliRunner().invoke(main, ["prices", "update"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "runpod: updated 13 prices (7 on-demand, 6 spot)" in result.output
    assert "h100-sxm at runpod-secure (1x H100 SXM, on-demand): 3.99 -> 2.99 (-25%)" in (
        result.output
    )
    assert "lambda: skipped: needs an API key in $LAMBDA_API_KEY" in result.output
    assert "vast-ai: skipped:" in result.output
    assert f"Wrote 13 prices to {path}" in result.output

    dry = CliRunner().invoke(main, ["prices", "update", "--provider", "runpod", "--dry-run"])
    assert dry.exit_code == 0 and "Dry run: nothing written" in dry.output
    assert "runpod-secure" in path.read_text() and not (tmp_path / "mine.yaml.bak").exists()

    replay.load()  # every feed fails
    failed = CliRunner().invoke(main, ["prices", "update", "--provider", "azure"])
    assert failed.exit_code == 1
    assert "No feed could be read" in failed.output
    unknown = CliRunner().invoke(main, ["prices", "update", "--provider", "aws"])
    assert unknown.exit_code != 0 and "no price feed named 'aws'" in str(unknown.exception)


def test_a_malformed_price_file_stops_before_any_feed_is_read(
    replay: Replay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pricing.feeds.update as update
    from pricing.errors import PricingError

    monkeypatch.setattr(update, "fetch_json", replay.fetch)
    replay.load("runpod")
    path = tmp_path / "prices.yaml"
    path.write_text("offers:\n  - {gpu: h100, provider: lambda, usd_per_hr: 2}\n")
    monkeypatch.setenv("PARETUNE_PRICES", str(path))
    replay.seen.clear()
    result = CliRunner().invoke(main, ["prices", "update"])
    assert isinstance(result.exception, PricingError)
    assert "usd_per_hr" in result.exception.message
    assert replay.seen == [] and "usd_per_hr" in path.read_text()
