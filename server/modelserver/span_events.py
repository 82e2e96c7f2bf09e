"""The timed events a Predict's span carries, and the phases they bound.

The model server marks queue wait and inference with events of the call's span rather than
child spans (half the cost); `rankserve trace` draws the phases back as rows. Both read the
names here. No imports: the trace tools load this without the server.
"""

QUEUED = "queued"
MODEL_CALL_STARTED = "model call started"
MODEL_CALL_FINISHED = "model call finished"

#: (row, event it starts at, event it ends at)
PHASES = (("queue wait", QUEUED, MODEL_CALL_STARTED),
          ("inference", MODEL_CALL_STARTED, MODEL_CALL_FINISHED))
