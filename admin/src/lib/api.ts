// The admin API client: every request carries the API key as a Bearer token.

export interface Paged<T> {
  items: T[];
  page: number;
  pageSize: number;
  total: number;
}

export interface Topic {
  name: string;
  connections: number;
  events: number;
  createdAt: number;
  lastEventAt: number | null;
}

export interface Connection {
  id: string;
  node: string;
  topics: string[];
  label: string | null;
  transport: "sse" | "websocket";
  remote: string | null;
  connectedAt: number;
}

export interface Node {
  id: string;
  hostname: string;
  advertiseHost: string;
  startedAt: number;
  connections: number;
  topics: number;
  /** When the shared store last heard it; null for one node on its own store. */
  lastHeartbeat: number | null;
}

export interface TailEvent {
  topic: string;
  seq: number;
  id: string;
  event: string | null;
  data: string;
  publishedAt: number;
}

/** An answer of the gateway that was not a success, with its JSON error. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Where an API path (`/v1/...`) is, relative to the app: the app lives at `<prefix>/admin/`
 * and the API at `<prefix>/v1/`, so the UI works behind a proxy that serves the gateway
 * under a path prefix.
 */
export function apiUrl(path: string): string {
  return path.startsWith("/") ? `..${path}` : path;
}

export async function request<T>(key: string, path: string, signal?: AbortSignal): Promise<T> {
  const response = await fetch(apiUrl(path), { headers: { Authorization: `Bearer ${key}` }, signal });
  if (!response.ok) {
    throw await apiError(response);
  }
  return (await response.json()) as T;
}

export async function apiError(response: Response): Promise<ApiError> {
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    return new ApiError(response.status, body.error?.code ?? "error", body.error?.message ?? response.statusText);
  } catch {
    return new ApiError(response.status, "error", `${response.status} ${response.statusText}`);
  }
}

export function topicsPath(page: number, pageSize: number): string {
  return `/v1/admin/topics?page=${page}&pageSize=${pageSize}`;
}

export function connectionsPath(page: number, pageSize: number): string {
  return `/v1/admin/connections?page=${page}&pageSize=${pageSize}`;
}

export function tailPath(topic: string, limit: number, follow: boolean): string {
  return `/v1/admin/topics/${encodeURIComponent(topic)}/tail?limit=${limit}${follow ? "&follow=1" : ""}`;
}

export function nodesPath(): string {
  return "/v1/admin/nodes";
}
