import { DurableObject } from "cloudflare:workers";

import type { Env } from "./env";
import type { Delivery } from "./model";

/**
 * A gateway node's channel, one object per node id: holds the node's WebSocket (with the
 * hibernation API, so an idle channel costs nothing) and sends it what the sequencer
 * routes to the node. Storage: `sent`, the epoch and number of the last message sent, so
 * a message sent again after a restart goes out once.
 */
export class Channel extends DurableObject<Env> {
  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("this is a node's channel: open it as a WebSocket\n", { status: 426 });
    }
    // One socket per node: a node that connects again replaces the one it had.
    for (const old of this.ctx.getWebSockets()) {
      try {
        old.close(1012, "replaced by a newer connection of this node");
      } catch {
        // Already closing.
      }
    }
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  /** Sends a delivery or marker, unless it went out already. */
  async send(delivery: Delivery): Promise<void> {
    await this.sendAll([delivery]);
  }

  /**
   * Sends deliveries of one epoch in their order (their numbers rising), each unless it
   * went out already: a batch's messages for this node in one call and one write.
   */
  async sendAll(deliveries: Delivery[]): Promise<void> {
    const sent = await this.ctx.storage.get<{ epoch: string; number: number }>("sent");
    const fresh = deliveries.filter(
      (d) => sent === undefined || sent.epoch !== d.epoch || d.number > sent.number,
    );
    const last = fresh[fresh.length - 1];
    if (last === undefined) {
      return;
    }
    await this.ctx.storage.put("sent", { epoch: last.epoch, number: last.number });
    for (const delivery of fresh) {
      this.broadcast(JSON.stringify(delivery));
    }
  }

  /** Tells the node a token was revoked. */
  async revoke(id: string): Promise<void> {
    this.broadcast(JSON.stringify({ revoke: id }));
  }

  private broadcast(text: string): void {
    for (const socket of this.ctx.getWebSockets()) {
      try {
        socket.send(text);
      } catch {
        // A socket closing: the node notices the numbers it missed.
      }
    }
  }

  override async webSocketMessage(socket: WebSocket, message: string | ArrayBuffer): Promise<void> {
    if (message === "ping") {
      socket.send("pong");
    }
  }

  override async webSocketClose(socket: WebSocket, code: number): Promise<void> {
    try {
      socket.close(code === 1005 || code === 1006 ? 1000 : code, "closed");
    } catch {
      // Already closed.
    }
  }
}
