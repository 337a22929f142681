"""What only exists inside ComfyUI: the start-up, the ``UnifiedMemoryManager`` node, the automatic subscriber
with its heavy-node rules, and the panel's attachment to ComfyUI's server. The top layer: it uses all the others.
"""
