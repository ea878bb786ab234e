// A topic's recent events, newest last, following new ones live.
import { useEffect, useState, type FormEvent } from "react";

import { formatTime } from "@/components/time";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Table, Td, Th } from "@/components/ui/table";
import { useTail } from "@/hooks/useTail";

export function TailTab(props: { apiKey: string; topic: string | null; onTopic: (topic: string) => void; onUnauthorized: () => void }) {
  const [draft, setDraft] = useState(props.topic ?? "");
  useEffect(() => setDraft(props.topic ?? ""), [props.topic]);
  const { events, live, following, error } = useTail(props.apiKey, props.topic, props.onUnauthorized);

  function submit(event: FormEvent) {
    event.preventDefault();
    if (draft.trim()) props.onTopic(draft.trim());
  }

  return (
    <Card>
      <CardHeader>
        <CardTitle>Tail events</CardTitle>
        {props.topic && following === "following" && live !== null && (
          <Badge variant={live ? "live" : "idle"}>{live ? "live, following" : "no subscribers"}</Badge>
        )}
        {props.topic && following !== "following" && (
          <Badge variant="idle">{following === "connecting" ? "connecting…" : "reconnecting…"}</Badge>
        )}
      </CardHeader>
      <CardContent className="space-y-3">
        <form onSubmit={submit} className="flex gap-2">
          <Input
            aria-label="Topic"
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            placeholder="a topic name, or pick one in Topics"
            className="font-mono"
          />
          <Button type="submit" disabled={!draft.trim()}>
            Tail
          </Button>
        </form>
        {error && <p className="text-sm text-destructive">{error}</p>}
        {props.topic && (
          <Table>
            <thead>
              <tr>
                <Th>Seq</Th>
                <Th>Id</Th>
                <Th>Event</Th>
                <Th>Data</Th>
                <Th>Published</Th>
              </tr>
            </thead>
            <tbody data-testid="tail-events">
              {events.map((event) => (
                <tr key={`${event.seq}-${event.publishedAt}`}>
                  <Td>{event.seq}</Td>
                  <Td className="font-mono text-xs">{event.id}</Td>
                  <Td>{event.event ?? "message"}</Td>
                  <Td>
                    <pre className="max-w-xl whitespace-pre-wrap break-all font-mono text-xs">{event.data}</pre>
                  </Td>
                  <Td>{formatTime(event.publishedAt)}</Td>
                </tr>
              ))}
              {events.length === 0 && (
                <tr>
                  <Td colSpan={5} className="text-muted-foreground">
                    No events yet; new ones appear here as they are published.
                  </Td>
                </tr>
              )}
            </tbody>
          </Table>
        )}
      </CardContent>
    </Card>
  );
}
