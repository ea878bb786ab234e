// Live topics across the cluster: connections, events, age; a click opens its tail.
import { useState } from "react";

import { ListHeader } from "@/components/ListHeader";
import { Pager } from "@/components/Pager";
import { formatTime } from "@/components/time";
import { Card, CardContent } from "@/components/ui/card";
import { Table, Td, Th } from "@/components/ui/table";
import { usePaged } from "@/hooks/usePaged";
import { topicsPath, type Topic } from "@/lib/api";

export function TopicsTab(props: { apiKey: string; onUnauthorized: () => void; onTail: (topic: string) => void }) {
  const [page, setPage] = useState(1);
  const [pageSize, setPageSize] = useState(100);
  const { data, error, loading, refresh } = usePaged<Topic>(props.apiKey, topicsPath(page, pageSize), props.onUnauthorized);

  return (
    <Card>
      <ListHeader title="Topics" refresh={refresh} loading={loading} />
      <CardContent className="space-y-3">
        {error && <p className="text-sm text-destructive">{error.message}</p>}
        <Table>
          <thead>
            <tr>
              <Th>Topic</Th>
              <Th>Connections</Th>
              <Th>Events</Th>
              <Th>Created</Th>
              <Th>Last event</Th>
            </tr>
          </thead>
          <tbody>
            {data?.items.map((topic) => (
              <tr key={topic.name}>
                <Td>
                  <button className="font-mono text-primary hover:underline" onClick={() => props.onTail(topic.name)}>
                    {topic.name}
                  </button>
                </Td>
                <Td>{topic.connections}</Td>
                <Td>{topic.events}</Td>
                <Td>{formatTime(topic.createdAt)}</Td>
                <Td>{formatTime(topic.lastEventAt)}</Td>
              </tr>
            ))}
            {data?.items.length === 0 && (
              <tr>
                <Td colSpan={5} className="text-muted-foreground">
                  No topic has a subscriber.
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
