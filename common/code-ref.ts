/** The exact code a run was submitted with, as stored objects the agent rebuilds it from. */
export interface CodeRef {
  /** HEAD commit, or null in a repo without commits. */
  commit: string | null;
  branch: string | null;
  remoteUrl: string | null;
  /** `git archive` of HEAD, content-addressed by commit. */
  archiveKey: string | null;
  /** Binary diff of tracked files against HEAD (staged and unstaged), if any. */
  diffKey: string | null;
  diffSha256: string | null;
  /** Tar of untracked files that git does not ignore, if any. */
  untrackedKey: string | null;
  untrackedSha256: string | null;
}
