// Its own module: generated.ts (from options.py) and types.ts both name it, and neither imports the other back.
/** An image spec as the API returns it (jupyter_taskq/image.py check_spec). */
export interface ImageSpec {
  python_packages: string[];
  python_version: string | null;
  commands: string[];
  env_vars: Record<string, string>;
  kernel: string | null;
  python: string | null;
}
