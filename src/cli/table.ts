/** How a column is aligned. */
export type Align = 'left' | 'right';

/**
 * Formats rows as an aligned text table under `headers`, columns two spaces apart, without
 * trailing spaces. `align` gives the alignment of each column (default left); numbers read
 * best right-aligned.
 */
export function formatTable(headers: string[], rows: string[][], align: Align[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    widths
      .map((w, i) => {
        const cell = cells[i] ?? '';
        return align[i] === 'right' ? cell.padStart(w) : cell.padEnd(w);
      })
      .join('  ')
      .trimEnd();
  return [headers, ...rows].map(line).join('\n') + '\n';
}

/** Formats `label: value` pairs with the values aligned. */
export function formatFields(fields: Array<[string, string]>): string {
  const width = Math.max(...fields.map(([label]) => label.length + 1));
  return fields.map(([label, value]) => `${(label + ':').padEnd(width)}  ${value}`).join('\n') + '\n';
}
