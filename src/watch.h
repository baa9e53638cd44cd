/*
 * --watch: notices changes to the app's Lua files with inotify. The app's folder and its
 * subfolders are watched, not the files: editors that write a new file and rename it over
 * the old one replace the inode, which a watch on the file itself would miss.
 */
#ifndef MF_WATCH_H
#define MF_WATCH_H

#include <event2/event.h>

typedef struct mf_watch mf_watch_t;

/* Calls on_change (debounced) when a .lua file under the app's folder changes. */
mf_watch_t *mf_watch_new(struct event_base *base, const char *app_path, void (*on_change)(void *),
                         void *arg);
void mf_watch_free(mf_watch_t *wt);

#endif
