import { act, cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { Login } from "./Login";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

function answer(status: number, body: unknown) {
  vi.stubGlobal("fetch", vi.fn(async () => new Response(JSON.stringify(body), { status })));
}

async function submit(key: string) {
  fireEvent.change(screen.getByLabelText("API key"), { target: { value: key } });
  await act(async () => {
    fireEvent.click(screen.getByRole("button", { name: "Log in" }));
  });
}

describe("Login", () => {
  it("says clearly when the key is refused, and keeps nothing", async () => {
    answer(401, { error: { code: "invalid_api_key", message: "the API key is not valid" } });
    const onLogin = vi.fn();
    render(<Login onLogin={onLogin} notice={null} />);
    await submit("wrong");
    expect(screen.getByRole("alert").textContent).toContain("That key is not valid");
    expect(onLogin).not.toHaveBeenCalled();
  });

  it("hands over the trimmed key the gateway accepted, sent as a Bearer token", async () => {
    answer(200, { items: [] });
    const onLogin = vi.fn();
    render(<Login onLogin={onLogin} notice={null} />);
    await submit("  right-key ");
    expect(onLogin).toHaveBeenCalledWith("right-key");
    const [, init] = vi.mocked(fetch).mock.calls[0];
    expect((init?.headers as Record<string, string>).Authorization).toBe("Bearer right-key");
  });
});
