build-asan/src/store/maildir.o: src/store/maildir.c src/store/maildir.h \
 src/base/file.h
src/store/maildir.h:
src/base/file.h:
