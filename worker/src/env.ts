import type { Channel } from "./channel";
import type { Directory } from "./directory";
import type { Sequencer } from "./sequencer";
import type { Topic } from "./topic";

/** The Worker's bindings (see wrangler.toml). */
export interface Env {
  TOPIC: DurableObjectNamespace<Topic>;
  DIRECTORY: DurableObjectNamespace<Directory>;
  SEQUENCER: DurableObjectNamespace<Sequencer>;
  CHANNEL: DurableObjectNamespace<Channel>;
  /** The shared secret every gateway node sends as `Authorization: Bearer <secret>`. */
  TIDEWAY_DO_SECRET?: string;
}
