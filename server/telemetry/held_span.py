"""Spans recorded cheaply while their trace may still be dropped.

Under the keep policy every span of a trace that was not head-sampled is recorded, and almost
all of them are dropped a few seconds later. The SDK's span is built for export: a lock, limits
and validation on every attribute, bounded lists, processor callbacks, some twenty objects for
the collector to walk. ``HeldSpan`` records the same facts in plain fields; only a kept trace's
spans become SDK ``ReadableSpan``s (``as_readable``), once, on their way to the exporter.

``HoldingTracer`` gives a ``HeldSpan`` to a span whose parent was not sampled, and leaves every
other span to the SDK's tracer: a root span (the sampler draws the head share, and an unsampled
root is recorded by the SDK, as before), and every span of a sampled trace.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes, AttributeValue

_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class HeldSpan(trace.Span):
    """A recording span of an unsampled trace, in plain fields; ``hold`` receives it at its end.

    Attribute values are kept as given and cleaned (as the SDK cleans them) only if the trace
    is kept.
    """

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: Attributes, start_time: int | None,
                 origin: tuple[Resource, InstrumentationScope | None],
                 hold: Callable[[HeldSpan], None]) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self.events: list[tuple[str, Attributes, int]] = []
        self.links: list[Link] = []
        self.status = Status(StatusCode.UNSET)
        self.start_time = start_time if start_time is not None else time.time_ns()
        self.end_time: int | None = None
        self._origin = origin
        self._hold = hold

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self.end_time is None:
            self.attributes.update(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.end_time is None:
            self.attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None,
                  timestamp: int | None = None) -> None:
        if self.end_time is None:
            self.events.append((name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self.end_time is None:
            self.links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        # As the SDK: OK is final, and UNSET never replaces a status that was set.
        if self.status.status_code != StatusCode.OK and status.status_code != StatusCode.UNSET:
            self.status = status

    def record_exception(self, exception: BaseException, attributes: Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        event = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        self._hold(self)

    def as_readable(self) -> ReadableSpan:
        """The span as the SDK exports it, marked sampled: its trace is kept."""
        ctx = self.context
        resource, scope = self._origin
        return ReadableSpan(
            name=self.name,
            context=SpanContext(ctx.trace_id, ctx.span_id, is_remote=False,
                                trace_flags=_SAMPLED, trace_state=ctx.trace_state),
            parent=self.parent, resource=resource,
            attributes=BoundedAttributes(attributes=self.attributes, immutable=True),
            events=[Event(name, attributes, timestamp)
                    for name, attributes, timestamp in self.events],
            links=self.links, kind=self.kind, status=self.status,
            start_time=self.start_time, end_time=self.end_time,
            instrumentation_scope=scope)


class HoldingTracer(trace.Tracer):
    """The SDK ``tracer``, except that a span whose parent was not sampled is a ``HeldSpan``
    given to ``hold`` at its end."""

    def __init__(self, tracer: SdkTracer, hold: Callable[[HeldSpan], None]) -> None:
        self._tracer = tracer
        self._hold = hold
        self._ids = tracer.id_generator
        self._origin = (tracer.resource, getattr(tracer, "_instrumentation_scope", None))

    def start_span(self, name: str, context: otel_context.Context | None = None,
                   kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None,
                   links: Sequence[Link] | None = (), start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True,
                   ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid or parent.trace_flags.sampled:
            return self._tracer.start_span(name, context, kind, attributes, links, start_time,
                                           record_exception, set_status_on_exception)
        span_context = SpanContext(parent.trace_id, self._ids.generate_span_id(),
                                   is_remote=False, trace_flags=_NOT_SAMPLED,
                                   trace_state=parent.trace_state)
        span = HeldSpan(name, span_context, parent, kind, attributes, start_time, self._origin,
                        self._hold)
        for link in links or ():
            span.add_link(link.context, link.attributes)
        return span

    @contextmanager
    def start_as_current_span(self, name: str, context: otel_context.Context | None = None,
                              kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None,
                              links: Sequence[Link] | None = (),
                              start_time: int | None = None, record_exception: bool = True,
                              set_status_on_exception: bool = True, end_on_exit: bool = True,
                              ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time,
                               record_exception, set_status_on_exception)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current
