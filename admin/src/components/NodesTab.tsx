// The cluster's nodes: id, host, connections, since when; and the connection count over
// the last refreshes.
import { useCallback, useEffect, useState } from "react";

import { ListHeader } from "@/components/ListHeader";
import { Sparkline } from "@/components/Sparkline";
import { formatTime } from "@/components/time";
import { Card, CardContent } from "@/components/ui/card";
import { Table, Td, Th } from "@/components/ui/table";
import { ApiError, nodesPath, request, type Node } from "@/lib/api";

/** Samples of the connection count kept for the sparkline. */
const SAMPLES = 60;

export function NodesTab(props: { apiKey: string; onUnauthorized: () => void }) {
  const [nodes, setNodes] = useState<Node[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [history, setHistory] = useState<number[]>([]);
  const { apiKey, onUnauthorized } = props;

  const refresh = useCallback(() => {
    setLoading(true);
    request<{ items: Node[] }>(apiKey, nodesPath())
      .then((answer) => {
        setNodes(answer.items);
        setError(null);
        const total = answer.items.reduce((sum, n) => sum + n.connections, 0);
        setHistory((h) => [...h, total].slice(-SAMPLES));
      })
      .catch((err: unknown) => {
        if (err instanceof ApiError && err.status === 401) onUnauthorized();
        setError(err instanceof ApiError ? err.message : String(err));
      })
      .finally(() => setLoading(false));
  }, [apiKey, onUnauthorized]);
  useEffect(refresh, [refresh]);

  return (
    <Card>
      <ListHeader title="Nodes" refresh={refresh} loading={loading} />
      <CardContent className="space-y-3">
        {error && <p className="text-sm text-destructive">{error}</p>}
        <Sparkline values={history} label="Connections" />
        <Table>
          <thead>
            <tr>
              <Th>Node</Th>
              <Th>Host</Th>
              <Th>Advertised</Th>
              <Th>Connections</Th>
              <Th>Topics</Th>
              <Th>Last heartbeat</Th>
              <Th>Started</Th>
            </tr>
          </thead>
          <tbody data-testid="nodes">
            {nodes?.map((node) => (
              <tr key={node.id}>
                <Td className="font-mono text-xs">{node.id}</Td>
                <Td>{node.hostname}</Td>
                <Td className="font-mono text-xs">{node.advertiseHost}</Td>
                <Td>{node.connections}</Td>
                <Td>{node.topics}</Td>
                <Td>{node.lastHeartbeat === null ? "— (one node)" : formatTime(node.lastHeartbeat)}</Td>
                <Td>{formatTime(node.startedAt)}</Td>
              </tr>
            ))}
            {nodes?.length === 0 && (
              <tr>
                <Td colSpan={7} className="text-muted-foreground">
                  No node is registered.
                </Td>
              </tr>
            )}
          </tbody>
        </Table>
        <p className="text-xs text-muted-foreground">
          A node is listed while its heartbeats reach the shared state; one that stops is removed within --node-ttl.
        </p>
      </CardContent>
    </Card>
  );
}
