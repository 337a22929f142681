// Finds a prompt's node on ComfyUI's canvas, for the panel's per-node profile: its title, and selecting it.
// Given `app` rather than importing it; every call is guarded, since the frontend's graph API changes between
// versions and a node created by an expansion has no node on the canvas. A library module: importing it does nothing.

/** `{ title(nodeId), select(nodeId) }` over ComfyUI's `app.graph` and `app.canvas`; null and false where absent. */
export function comfyCanvas(app) {
  const find = (nodeId) => {
    const graph = app?.graph;
    if (typeof graph?.getNodeById !== "function") return null;
    const numeric = Number(nodeId);
    try {
      return (Number.isInteger(numeric) ? graph.getNodeById(numeric) : null) ?? graph.getNodeById(nodeId) ?? null;
    } catch {
      return null;
    }
  };
  return {
    title(nodeId) {
      const title = find(nodeId)?.title;
      return typeof title === "string" && title ? title : null;
    },
    select(nodeId) {
      const node = find(nodeId);
      const canvas = app?.canvas;
      if (!node || typeof canvas?.selectNode !== "function") return false;
      try {
        canvas.selectNode(node);
        canvas.centerOnNode?.(node);
        canvas.setDirty?.(true, true);
        return true;
      } catch (error) {
        console.warn("memhooks: this frontend could not select the node", error);
        return false;
      }
    },
  };
}
