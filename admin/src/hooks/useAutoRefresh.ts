// Calls `refresh` every `seconds` while `on`, and says when it last did.
import { useEffect, useState } from "react";

export function useAutoRefresh(refresh: () => void, seconds: number, on: boolean): Date | null {
  const [last, setLast] = useState<Date | null>(null);
  useEffect(() => {
    if (!on) return;
    const timer = setInterval(() => {
      refresh();
      setLast(new Date());
    }, seconds * 1000);
    return () => clearInterval(timer);
  }, [refresh, seconds, on]);
  return last;
}
