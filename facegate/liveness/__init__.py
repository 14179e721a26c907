"""Liveness: active challenge-response fused with passive presentation-attack detection.

Python API (what the HTTP router in ``facegate.service.routers.liveness`` calls)::

    from facegate.liveness.challenge import LivenessSessions
    from facegate.liveness.judge import LivenessJudge

    judge = LivenessJudge.load(engine, settings)          # models from engine.pack (+ minifasnet pack)
    sessions = LivenessSessions(settings)                 # in-memory, thread-safe
    s = sessions.create(subject_id="P-1", purpose="pension", owner=key_id)
    s.public()                                            # session_id, challenge, nonce, expires_at
    sessions.add_to_capture(s.id, lambda cap: cap.add_jpegs([(t, jpeg), ...], max_bytes, max_pixels),
                            nonce, owner)                 # or cap.add_video(mp4_bytes, max_pixels)
    result = sessions.complete(s.id, judge, nonce, owner) # live, score, actions, passive, reasons ...
    used = sessions.consume(s.id, subject_id, owner)      # once: used.embedding for verify

Modules: ``landmarks`` / ``eyes`` / ``pose`` / ``pad`` (one model each), ``minifasnet`` (graph
builder), ``tracker`` (per-frame observations), ``actions`` (challenge matching), ``capture``
(frames, video decoding, capture checks), ``judge`` (the verdict), ``challenge`` (sessions),
``attacks`` (synthetic attacks for tests and benchmarks).
"""
