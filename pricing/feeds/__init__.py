"""Providers' public price feeds, and ``paretune prices update`` which writes what they say.

    from pricing.feeds import update_prices
    report = update_prices(load_catalog(), default_override_path())

One module per provider (``runpod``, ``vast``, ``lambda_cloud``, ``azure``), each holding
its request, the documented shape of the answer and the mapping of the provider's GPU
names to catalogue ids; ``update`` reads them and writes the user's price file. Only the
standard library talks to the network (``urllib``).
"""

from pricing.feeds.base import FeedChangedShape, FeedError, FeedOffer, FeedUnavailable, fetch_json
from pricing.feeds.update import FEEDS, FeedReport, UpdateReport, feed_names, update_prices

__all__ = [
    "FEEDS",
    "FeedChangedShape",
    "FeedError",
    "FeedOffer",
    "FeedReport",
    "FeedUnavailable",
    "UpdateReport",
    "feed_names",
    "fetch_json",
    "update_prices",
]
