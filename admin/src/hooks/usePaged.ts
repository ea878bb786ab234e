// One page of an admin list, refetched when the page, the size or `refresh` changes.
import { useCallback, useEffect, useState } from "react";

import { ApiError, request, type Paged } from "@/lib/api";

export interface PagedState<T> {
  data: Paged<T> | null;
  error: ApiError | null;
  loading: boolean;
  refresh: () => void;
}

export function usePaged<T>(key: string, path: string, onUnauthorized: () => void): PagedState<T> {
  const [data, setData] = useState<Paged<T> | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(false);
  const [generation, setGeneration] = useState(0);
  const refresh = useCallback(() => setGeneration((g) => g + 1), []);

  useEffect(() => {
    const abort = new AbortController();
    setLoading(true);
    request<Paged<T>>(key, path, abort.signal)
      .then((page) => {
        setData(page);
        setError(null);
      })
      .catch((err: unknown) => {
        if (abort.signal.aborted) return;
        if (err instanceof ApiError && err.status === 401) onUnauthorized();
        setError(err instanceof ApiError ? err : new ApiError(0, "network", String(err)));
      })
      .finally(() => {
        if (!abort.signal.aborted) setLoading(false);
      });
    return () => abort.abort();
  }, [key, path, generation, onUnauthorized]);

  return { data, error, loading, refresh };
}
