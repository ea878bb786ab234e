// How the UI writes times: local date and time, to the second.
export function formatTime(ms: number | null): string {
  return ms ? new Date(ms).toLocaleString() : "—";
}
