// The admin app: log in with an API key, then Topics | Connections | Nodes | Tail Events.
import { LogOut } from "lucide-react";
import { useCallback, useState } from "react";

import { ConnectionsTab } from "@/components/ConnectionsTab";
import { Login } from "@/components/Login";
import { NodesTab } from "@/components/NodesTab";
import { TailTab } from "@/components/TailTab";
import { TopicsTab } from "@/components/TopicsTab";
import { Button } from "@/components/ui/button";
import { Tabs, TabsContent, TabsList, TabsTrigger } from "@/components/ui/tabs";
import { useApiKey } from "@/hooks/useApiKey";

export function App() {
  const [key, login, logout] = useApiKey();
  const [notice, setNotice] = useState<string | null>(null);
  const [tab, setTab] = useState("topics");
  const [tailTopic, setTailTopic] = useState<string | null>(null);
  const onUnauthorized = useCallback(() => {
    setNotice("The gateway no longer accepts this key; log in again.");
    logout();
  }, [logout]);

  if (!key) {
    return (
      <Login
        notice={notice}
        onLogin={(next) => {
          setNotice(null);
          login(next);
        }}
      />
    );
  }

  return (
    <div className="mx-auto max-w-6xl p-6">
      <header className="mb-6 flex items-center justify-between">
        <h1 className="text-lg font-semibold">Tideway admin</h1>
        <Button variant="ghost" size="sm" onClick={logout}>
          <LogOut className="size-4" /> Log out
        </Button>
      </header>
      <Tabs value={tab} onValueChange={setTab}>
        <TabsList>
          <TabsTrigger value="topics">Topics</TabsTrigger>
          <TabsTrigger value="connections">Connections</TabsTrigger>
          <TabsTrigger value="nodes">Nodes</TabsTrigger>
          <TabsTrigger value="tail">Tail Events</TabsTrigger>
        </TabsList>
        <TabsContent value="topics">
          <TopicsTab
            apiKey={key}
            onUnauthorized={onUnauthorized}
            onTail={(topic) => {
              setTailTopic(topic);
              setTab("tail");
            }}
          />
        </TabsContent>
        <TabsContent value="connections">
          <ConnectionsTab apiKey={key} onUnauthorized={onUnauthorized} />
        </TabsContent>
        <TabsContent value="nodes">
          <NodesTab apiKey={key} onUnauthorized={onUnauthorized} />
        </TabsContent>
        <TabsContent value="tail">
          <TailTab apiKey={key} topic={tailTopic} onTopic={setTailTopic} onUnauthorized={onUnauthorized} />
        </TabsContent>
      </Tabs>
    </div>
  );
}
