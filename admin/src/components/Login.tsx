// Asks for the API key, checks it against the admin API, and keeps it on success.
import { useState, type FormEvent } from "react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { ApiError, request } from "@/lib/api";

export function Login({ onLogin, notice }: { onLogin: (key: string) => void; notice: string | null }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setChecking(true);
    setError(null);
    try {
      // Any key with the admin scope may list topics (a tenant's or a topic-bound key
      // sees its own), so this checks the key without asking for more than it may read.
      await request(key.trim(), "/v1/admin/topics?pageSize=1");
      onLogin(key.trim());
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? "That key is not valid. Use one of SSE_PUBLISHER_API_KEYS, or the key the gateway printed at start."
          : err instanceof ApiError && err.status === 403
            ? "That key may not use the admin API: it needs the admin scope."
            : `The gateway did not answer: ${String(err)}`,
      );
    } finally {
      setChecking(false);
    }
  }

  return (
    <div className="flex min-h-screen items-center justify-center p-6">
      <Card className="w-full max-w-sm">
        <CardHeader>
          <CardTitle>Tideway admin</CardTitle>
        </CardHeader>
        <CardContent>
          <form onSubmit={submit} className="space-y-3">
            <label htmlFor="api-key" className="block text-sm font-medium">
              API key
            </label>
            <Input
              id="api-key"
              type="password"
              autoComplete="off"
              value={key}
              onChange={(e) => setKey(e.target.value)}
              placeholder="the publisher key"
            />
            {(error ?? notice) && (
              <p role="alert" className="text-sm text-destructive">
                {error ?? notice}
              </p>
            )}
            <Button type="submit" className="w-full" disabled={!key.trim() || checking}>
              {checking ? "Checking…" : "Log in"}
            </Button>
          </form>
        </CardContent>
      </Card>
    </div>
  );
}
