from rankserve.tfserving.v1 import profiler_pb2 as _profiler_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
