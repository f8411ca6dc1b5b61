"""Sends one round of metrics to the collector with the real OpenTelemetry
SDK and its OTLP exporter, as any instrumented program would.

usage: send.py grpc|http ENDPOINT SERVICE INSTANCE [--token T] [--delta] [--exponential]

Records: a counter `orders` (5 in total, by `payment.method`), an up-down
counter `queue.depth` (net 3), an observable gauge `temperature` in Cel
(21.5), a histogram `request.duration` in s (0.05, 0.2, 0.2, 3), and with
--exponential also an exponential histogram `size` (which the collector
refuses). Prints one JSON line: whether the export succeeded.
"""

import argparse
import json
import logging
import sys

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=["grpc", "http"])
    parser.add_argument("endpoint")
    parser.add_argument("service")
    parser.add_argument("instance")
    parser.add_argument("--token")
    parser.add_argument("--delta", action="store_true")
    parser.add_argument("--exponential", action="store_true")
    args = parser.parse_args()

    headers = {"authorization": f"Bearer {args.token}"} if args.token else None
    temporality = None
    if args.delta:
        delta = AggregationTemporality.DELTA
        temporality = {
            Counter: delta,
            UpDownCounter: AggregationTemporality.CUMULATIVE,
            Histogram: delta,
            ObservableCounter: delta,
            ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
            ObservableGauge: AggregationTemporality.CUMULATIVE,
        }
    if args.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(
            endpoint=args.endpoint, insecure=True, headers=headers,
            preferred_temporality=temporality, timeout=10,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(
            endpoint=args.endpoint, headers=headers,
            preferred_temporality=temporality, timeout=10,
        )

    results = []
    export = exporter.export

    def recording_export(*a, **kw):
        result = export(*a, **kw)
        results.append(result)
        return result

    exporter.export = recording_export

    views = []
    if args.exponential:
        views.append(View(instrument_name="size", aggregation=ExponentialBucketHistogramAggregation()))
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": args.service, "service.instance.id": args.instance})
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
    meter = provider.get_meter("send.py")

    orders = meter.create_counter("orders", unit="{order}", description="Orders placed.")
    orders.add(2, {"payment.method": "card"})
    orders.add(3, {"payment.method": "cash"})
    depth = meter.create_up_down_counter("queue.depth", description="Jobs waiting.")
    depth.add(5)
    depth.add(-2)

    def temperature(_options: CallbackOptions):
        yield Observation(21.5, {"room": "server"})

    meter.create_observable_gauge("temperature", callbacks=[temperature], unit="Cel",
                                  description="Room temperature.")
    duration = meter.create_histogram("request.duration", unit="s", description="Request time.")
    for value in (0.05, 0.2, 0.2, 3):
        duration.record(value, {"route": "/buy"})
    if args.exponential:
        meter.create_histogram("size", unit="By").record(123)

    provider.force_flush(timeout_millis=10_000)
    provider.shutdown(timeout_millis=10_000)
    ok = bool(results) and all(r == MetricExportResult.SUCCESS for r in results)
    print(json.dumps({"exported": ok, "exports": len(results)}))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(main())
