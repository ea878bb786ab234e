// Page controls for a paged admin list: previous, next, and the page size (up to 500).
import { Button } from "@/components/ui/button";

export const PAGE_SIZES = [25, 100, 500];

export function Pager(props: {
  page: number;
  pageSize: number;
  total: number;
  onPage: (page: number) => void;
  onPageSize: (size: number) => void;
}) {
  const pages = Math.max(1, Math.ceil(props.total / props.pageSize));
  return (
    <div className="flex items-center gap-2 text-sm text-muted-foreground">
      <span>
        {props.total} total · page {props.page} of {pages}
      </span>
      <Button size="sm" variant="outline" disabled={props.page <= 1} onClick={() => props.onPage(props.page - 1)}>
        Previous
      </Button>
      <Button size="sm" variant="outline" disabled={props.page >= pages} onClick={() => props.onPage(props.page + 1)}>
        Next
      </Button>
      <select
        aria-label="Page size"
        className="h-8 rounded-md border border-border bg-white px-2"
        value={props.pageSize}
        onChange={(e) => props.onPageSize(Number(e.target.value))}
      >
        {PAGE_SIZES.map((size) => (
          <option key={size} value={size}>
            {size} per page
          </option>
        ))}
      </select>
    </div>
  );
}
