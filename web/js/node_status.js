// Shows the UnifiedMemoryManager's status line on the node after each run.
import { app } from "../../../scripts/app.js";

const NODE_CLASS = "UnifiedMemoryManager";
const WIDGET_NAME = "memhooks_status";
const MARGIN = 15;

// A display-only widget drawn on the canvas: never saved into the workflow, never editable.
function statusWidget() {
  return {
    name: WIDGET_NAME,
    type: "memhooks.status",
    value: "",
    serialize: false,
    options: { serialize: false },
    computeSize(width) {
      return [width, 22];
    },
    draw(ctx, node, width, y, height) {
      if (!this.value) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.fillStyle = globalThis.LiteGraph?.WIDGET_TEXT_COLOR ?? "#ddd";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      let text = this.value;
      const room = width - 2 * MARGIN;
      while (text.length > 1 && ctx.measureText(text).width > room) text = text.slice(0, -2) + "…";
      ctx.fillText(text, MARGIN, y + height / 2);
      ctx.restore();
    },
  };
}

app.registerExtension({
  name: "memhooks.NodeStatus",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_CLASS) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text?.[0];
      if (typeof text !== "string") return;
      let widget = this.widgets?.find((w) => w.name === WIDGET_NAME);
      if (!widget) {
        widget = this.addCustomWidget(statusWidget());
        this.setSize?.([this.size[0], this.computeSize()[1]]);
      }
      widget.value = text;
      this.setDirtyCanvas?.(true, false);
    };
  },
});
