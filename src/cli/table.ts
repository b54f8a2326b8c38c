/** How a column is aligned. */
export type Align = 'left' | 'right';

/** A table to format. */
export interface Table {
  headers: string[];
  rows: string[][];
  /** Alignment of each column; default left. Numbers read best right-aligned. */
  align?: Align[];
}

/** Formats a table as aligned text under its headers, columns two spaces apart, without trailing spaces. */
export function formatTable({ headers, rows, align = [] }: Table): string {
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
