// The header of an admin list: its title, the auto-refresh switch and a Refresh button.
import { RefreshCw } from "lucide-react";

import { AutoRefresh } from "@/components/AutoRefresh";
import { Button } from "@/components/ui/button";
import { CardHeader, CardTitle } from "@/components/ui/card";

export function ListHeader(props: { title: string; refresh: () => void; loading: boolean }) {
  return (
    <CardHeader>
      <CardTitle>{props.title}</CardTitle>
      <div className="flex items-center gap-4">
        <AutoRefresh refresh={props.refresh} />
        <Button size="sm" variant="outline" onClick={props.refresh} disabled={props.loading}>
          <RefreshCw className="size-3.5" /> Refresh
        </Button>
      </div>
    </CardHeader>
  );
}
