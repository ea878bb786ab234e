// Subscriber connections across the cluster: node, transport, topics, since when.
import { useState } from "react";

import { ListHeader } from "@/components/ListHeader";
import { Pager } from "@/components/Pager";
import { formatTime } from "@/components/time";
import { Badge } from "@/components/ui/badge";
import { Card, CardContent } from "@/components/ui/card";
import { Table, Td, Th } from "@/components/ui/table";
import { usePaged } from "@/hooks/usePaged";
import { connectionsPath, type Connection } from "@/lib/api";

export function ConnectionsTab(props: { apiKey: string; onUnauthorized: () => void }) {
  const [page, setPage] = useState(1);
  const [pageSize, setPageSize] = useState(100);
  const { data, error, loading, refresh } = usePaged<Connection>(
    props.apiKey,
    connectionsPath(page, pageSize),
    props.onUnauthorized,
  );

  return (
    <Card>
      <ListHeader title="Connections" refresh={refresh} loading={loading} />
      <CardContent className="space-y-3">
        {error && <p className="text-sm text-destructive">{error.message}</p>}
        <Table>
          <thead>
            <tr>
              <Th>Connection</Th>
              <Th>Label</Th>
              <Th>Node</Th>
              <Th>Transport</Th>
              <Th>Topics</Th>
              <Th>Client</Th>
              <Th>Connected since</Th>
            </tr>
          </thead>
          <tbody>
            {data?.items.map((connection) => (
              <tr key={connection.id}>
                <Td className="font-mono text-xs">{connection.id}</Td>
                <Td>{connection.label ?? "—"}</Td>
                <Td className="font-mono text-xs">{connection.node}</Td>
                <Td>
                  <Badge>{connection.transport === "sse" ? "SSE" : "WebSocket"}</Badge>
                </Td>
                <Td className="font-mono text-xs">{connection.topics.join(", ")}</Td>
                <Td className="font-mono text-xs">{connection.remote ?? "—"}</Td>
                <Td>{formatTime(connection.connectedAt)}</Td>
              </tr>
            ))}
            {data?.items.length === 0 && (
              <tr>
                <Td colSpan={7} className="text-muted-foreground">
                  No subscriber is connected.
                </Td>
              </tr>
            )}
          </tbody>
        </Table>
        {data && (
          <Pager
            page={data.page}
            pageSize={data.pageSize}
            total={data.total}
            onPage={setPage}
            onPageSize={(size) => {
              setPageSize(size);
              setPage(1);
            }}
          />
        )}
      </CardContent>
    </Card>
  );
}
