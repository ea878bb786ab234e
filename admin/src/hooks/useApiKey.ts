// The API key the admin logged in with, kept in localStorage (never a cookie).
import { useCallback, useState } from "react";

const STORAGE_KEY = "tideway.apiKey";

export function useApiKey(): [string | null, (key: string) => void, () => void] {
  const [key, setKey] = useState<string | null>(() => localStorage.getItem(STORAGE_KEY));
  const login = useCallback((next: string) => {
    localStorage.setItem(STORAGE_KEY, next);
    setKey(next);
  }, []);
  const logout = useCallback(() => {
    localStorage.removeItem(STORAGE_KEY);
    setKey(null);
  }, []);
  return [key, login, logout];
}
