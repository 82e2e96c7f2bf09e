"""The local trace path: an OTLP receiver that keeps recent traces, and their waterfall."""
