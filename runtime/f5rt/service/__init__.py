"""The serving core: what HTTP (`f5rt.server`) and Triton (`f5rt.triton`) both adapt.

    f5rt.service.errors    ServiceError (status + code + message), map_error: any exception as one
    f5rt.service.requests  the request schema and its checks, SynthesisOptions from a request, voices
    f5rt.service.work      ChunkWork and RequestPlan (planned work), SynthesisResult, the one grouping
    f5rt.service.engine    ChunkEngine: the planning/running seam the synthesizer implements
    f5rt.service.jobs      whole requests and streams, cut into rows of chunk work
    f5rt.service.batcher   the single worker that runs rows of many requests in shared engine calls

A transport adapter translates its wire format into a request body, calls `requests` to check it,
queues it on the `batcher` (or calls the synthesizer), and turns results and `ServiceError`s back
into its wire format. Nothing here imports a web framework or Triton, and neither adapter imports
the other. The option names are SynthesisOptions' own from here down (`nfe`, `cfg`, `sway`, ...);
only the request schema knows the wire spelling (`nfe_step`, `cfg_strength`, ...).
"""
