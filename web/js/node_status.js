// Shows the UnifiedMemoryManager's status line on the node after each run.
import { app } from "../../../scripts/app.js";

const NODE_CLASS = "UnifiedMemoryManager";

app.registerExtension({
  name: "memhooks.NodeStatus",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_CLASS) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text?.[0];
      if (typeof text !== "string") return;
      let widget = this.widgets?.find((w) => w.name === "memhooks_status");
      if (!widget) {
        widget = this.addWidget("text", "memhooks_status", "", () => {}, { serialize: false });
        widget.serialize = false; // display only: never saved into the workflow's widget values
        widget.disabled = true;
        widget.label = "status";
      }
      widget.value = text;
      this.setDirtyCanvas?.(true, false);
    };
  },
});
