"""When to free memory: the automatic policy's settings and heavy-node rules, the pressure watchdog, predictive
cleanup with what it learned, and the files they keep.

Above the engine, below the hook: each part here decides that memory should be freed and asks the engine
(:mod:`..engine`), which knows how. Nothing here frees memory itself, and nothing here knows ComfyUI's executor.
"""
